#!/usr/bin/env python
"""Speed, memory and exactness of the fast evaluator against pycocotools (and faster-coco-eval).

    .venv/bin/python benchmarks/bench_eval.py [--images 5000] [--boot 1000] [--skip-reference]

Generates 5000 images (about 7 GT each, heavily small-skewed, 3% crowd) with 100 detections each,
then times evaluate+accumulate with the default COCO bins and with 6 AI-TOD-style ranges (``all``
plus the ``aitod`` preset). Each evaluator runs in its own process so that its peak memory (RSS
above the process's size once the data is loaded) can be measured; the ratios printed are from
this one run. Finally it times a 1000-resample image-level bootstrap of the same evaluation.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * resource.getpagesize() / 2**20


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child(kind: str, bins: str, data: Path, out: Path) -> None:
    from detector.evaluation.fast_eval import coco_iou_thrs
    from detector.utils.bins import get_bins

    size_bins = get_bins(bins)
    gt_path, dt_path = data / "gt.json", data / "results.json"
    if kind == "fast":
        from detector.evaluation.coco_io import load_gt, load_results
        from detector.evaluation.fast_eval import accumulate, build_match_table

        records = json.loads(dt_path.read_text())
        gt = load_gt(gt_path)
        base = _rss_mb()
        runs = []
        for _ in range(3):  # median of 3: the machine is shared, single timings are noisy
            t0 = time.perf_counter()
            dets = load_results(records, gt)
            t1 = time.perf_counter()
            mt = build_match_table(gt, dets, size_bins, (1, 10, 100), coco_iou_thrs())
            precision, recall = accumulate(mt)
            t2 = time.perf_counter()
            runs.append((t2 - t1, t2 - t0))
            del mt
        runs.sort()
        res = {"seconds": runs[1][0], "seconds_with_parsing": runs[1][1]}
    else:
        import contextlib
        import io

        if kind == "pycocotools":
            from pycocotools.coco import COCO
            from pycocotools.cocoeval import COCOeval
        else:
            from faster_coco_eval import COCO
            from faster_coco_eval import COCOeval_faster as COCOeval
        with contextlib.redirect_stdout(io.StringIO()):
            gt = COCO(str(gt_path))
            dt = gt.loadRes(str(dt_path))
            ev = COCOeval(gt, dt, "bbox")
            ev.params.areaRng = [list(b.area_range) for b in size_bins]
            ev.params.areaRngLbl = [b.name for b in size_bins]
            base = _rss_mb()
            t1 = time.perf_counter()
            ev.evaluate()
            ev.accumulate()
            t2 = time.perf_counter()
        precision, recall = ev.eval["precision"], ev.eval["recall"]
        res = {"seconds": t2 - t1}
    res["peak_mb"] = max(0.0, _peak_mb() - base)
    np.save(out / f"{kind}_{bins}_precision.npy", precision)
    np.save(out / f"{kind}_{bins}_recall.npy", recall)
    print(json.dumps(res))


def run_child(kind: str, bins: str, data: Path) -> dict | None:
    cmd = [sys.executable, __file__, "--child", kind, "--bins", bins, "--data", str(data)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"  {kind}: failed ({proc.stderr.strip().splitlines()[-1:]})")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=5000)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--skip-reference", action="store_true", help="do not run pycocotools")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--bins", default="coco", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.bins, Path(args.data), Path(args.data))
        return

    from detector.evaluation.synthetic import make_dataset

    try:
        import faster_coco_eval  # noqa: F401

        have_fce = True
    except ImportError:
        have_fce = False
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        gt, results = make_dataset(args.images, gt_per_image=7, dets_per_image=100, seed=0)
        (data / "gt.json").write_text(json.dumps(gt))
        (data / "results.json").write_text(json.dumps(results))
        n_crowd = sum(a["iscrowd"] for a in gt["annotations"])
        n_small = sum(a["area"] <= 32**2 for a in gt["annotations"])
        print(
            f"data: {args.images} images, {len(gt['annotations'])} GT ({n_small} small, "
            f"{n_crowd} crowd), {len(results)} detections, {len(gt['categories'])} classes"
        )
        for bins, label in (
            ("coco", "default COCO bins (4 ranges)"),
            ("aitod", "AI-TOD bins (6 ranges)"),
        ):
            print(f"\n== evaluate+accumulate, {label}")
            fast = run_child("fast", bins, data)
            print(
                f"  fast (median of 3): {fast['seconds']:5.2f} s  (with parsing the results list: "
                f"{fast['seconds_with_parsing']:.2f} s)  peak +{fast['peak_mb']:.0f} MB"
            )
            ref = None if args.skip_reference else run_child("pycocotools", bins, data)
            if ref:
                p1 = np.load(data / f"fast_{bins}_precision.npy")
                p2 = np.load(data / f"pycocotools_{bins}_precision.npy")
                r1 = np.load(data / f"fast_{bins}_recall.npy")
                r2 = np.load(data / f"pycocotools_{bins}_recall.npy")
                diff = max(np.abs(p1 - p2).max(), np.abs(r1 - r2).max())
                print(f"  pycocotools:     {ref['seconds']:7.2f} s  peak +{ref['peak_mb']:.0f} MB")
                print(
                    f"  speed-up vs pycocotools: {ref['seconds'] / fast['seconds']:.1f}x; "
                    f"memory {fast['peak_mb']:.0f} MB vs {ref['peak_mb']:.0f} MB; "
                    f"max |diff| of precision/recall arrays: {diff:.3g}"
                )
            if have_fce:
                fce = run_child("faster_coco_eval", bins, data)
                if fce:
                    print(
                        f"  faster-coco-eval:{fce['seconds']:7.2f} s  peak +{fce['peak_mb']:.0f} MB"
                    )
                    print(
                        f"  speed-up vs faster-coco-eval: {fce['seconds'] / fast['seconds']:.1f}x"
                    )
            else:
                print("  faster-coco-eval not installed: no comparison")

        from detector.evaluation.bootstrap import bootstrap_runs

        keys = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large"]
        print(f"\n== image-level bootstrap, {args.boot} resamples, COCO bins, keys {keys}")
        t0 = time.perf_counter()
        out = bootstrap_runs(gt, [results], keys, n=args.boot)
        dt = time.perf_counter() - t0
        lo, hi = out["ci"][0, 0]
        print(
            f"  one run:     {dt:5.1f} s in total (parse + match once, {args.boot} "
            f"re-accumulations); AP {out['values'][0, 0]:.4f}, 95% CI [{lo:.4f}, {hi:.4f}]"
        )
        rng = np.random.default_rng(1)
        worse = [r for r in results if rng.random() > 0.1]  # run B: 10% of detections dropped
        t0 = time.perf_counter()
        out = bootstrap_runs(gt, [results, worse], keys, n=args.boot)
        dt = time.perf_counter() - t0
        d, lo, hi = out["delta_ci"][1, 0]
        print(
            f"  paired A/B:  {dt:5.1f} s in total (same resamples for both runs); "
            f"delta AP {d:+.4f}, 95% CI [{lo:+.4f}, {hi:+.4f}]"
        )


if __name__ == "__main__":
    main()
