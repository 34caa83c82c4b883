#!/usr/bin/env python
"""Sliced against whole-image inference on large aerial scenes, and against SAHI itself.

    python benchmarks/bench_slicing.py --checkpoint RUN/model_final.pth [--config CFG]
        [--data ../shared/data/kit_ais_aerial_cars] [--split val] [--canvas 4000]
        [--max-images N] [--slice 512] [--overlap 0.2] [--scales 1,2] [--merge nms]
        [--match-metric iou] [--match-threshold 0.5] [--batch-size 8] [--threads 2]
        [--bins aitod] [--categories car] [--repeats N] [--no-sahi] [--workdir DIR] [--json OUT]

Scenes: the split's images are mosaicked (shelf packing, in id order) into canvases of at most
``--canvas`` px a side at run time, their boxes shifted, and written with their ground truth to
a temporary folder (never into the project): real pixels, real objects, a 4000 px scene.

Methods, each in its own subprocess (so its peak RSS is its own), all with the same model:

- ``whole``: the whole canvas through the config's test pipeline, with the model's caps
  (``rpn.*_nms_top_n_test``, ``roi.detections_per_img``) raised by the canvas-to-tile area
  ratio, so that the comparison is not about a 300-box cap on a scene with 500 cars;
- ``sliced xS``: ``detector.engine.slicing`` at each ``--scales`` factor, tiles batched
  ``--batch-size`` at a time, border handling on;
- ``sliced x1 sahi-merge``: the same at scale 1 with the border handling off, i.e. SAHI's
  algorithm (same tiles, same merge), run batched by our pipeline;
- ``sahi``: ``sahi.predict.get_sliced_prediction`` on the same model, tile, overlap and merge
  (``perform_standard_pred`` off), as shipped (its torchvision wrapper runs with autograd on)
  and ``sahi no-grad`` (the same under ``torch.inference_mode``). Skipped with a message when
  SAHI is not installed (``pip install sahi``; not a project dependency).

Prints AP by size bin for every method, images/s with the ratio to SAHI, and peak RSS (and its
rise over the RSS before predicting). The first forward pass of every method is a warm-up
outside the timing; ``--repeats N`` times every method N times in ABBA order and reports the
median, for a machine whose load drifts (one run of each method is the default).
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "kit_ais_aerial_cars"


# ------------------------------------------------------------------------------------ scenes


def build_mosaics(data: Path, split: str, canvas: int, max_images: int, out: Path) -> Path:
    """Canvases of at most ``canvas`` px a side from the split's images; returns the GT path."""
    from PIL import Image

    gt = json.loads((data / f"{split}.json").read_text())
    anns: dict = {}
    for a in gt["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    images = sorted(gt["images"], key=lambda im: im["id"])[: max_images or None]
    pages: list[list[tuple[dict, int, int]]] = [[]]
    x = y = row_h = 0
    for im in images:
        w, h = im["width"], im["height"]
        if x and x + w > canvas:
            x, y, row_h = 0, y + row_h, 0
        if y and y + h > canvas:
            pages.append([])
            x = y = row_h = 0
        pages[-1].append((im, x, y))
        x, row_h = x + w, max(row_h, h)
    out_images, out_anns = [], []
    for k, page in enumerate(p for p in pages if p):
        width = max(px + im["width"] for im, px, _ in page)
        height = max(py + im["height"] for im, _, py in page)
        scene = Image.new("RGB", (width, height))
        for im, px, py in page:
            with Image.open(data / "images" / im["file_name"]) as src:
                scene.paste(src.convert("RGB"), (px, py))
            for a in anns.get(im["id"], []):
                bx, by, bw, bh = a["bbox"]
                out_anns.append(
                    {
                        "id": len(out_anns) + 1,
                        "image_id": k + 1,
                        "category_id": a["category_id"],
                        "bbox": [bx + px, by + py, bw, bh],
                        "area": a.get("area", bw * bh),
                        "iscrowd": a.get("iscrowd", 0),
                    }
                )
        name = f"scene_{k:02d}.png"
        scene.save(out / name)
        out_images.append({"id": k + 1, "file_name": name, "width": width, "height": height})
    path = out / "gt.json"
    doc = {"images": out_images, "annotations": out_anns, "categories": gt["categories"]}
    path.write_text(json.dumps(doc))
    return path


# ----------------------------------------------------------------------------------- methods


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2**20


def child(args: argparse.Namespace) -> None:
    """Run one method on every scene; print one JSON line (timing, memory) and write results."""
    import torch

    from detector.config import load_config
    from detector.data.images import read_image
    from detector.engine.loading import load_trained_model
    from detector.engine.predict import detections_to_records, model_categories
    from detector.engine.slicing import SliceSpec, config_test_size, predict_sliced, predict_whole

    torch.set_num_threads(args.threads)
    method = json.loads(args.child)
    work = Path(args.workdir)
    gt = json.loads((work / "gt.json").read_text())
    overrides = list(method.get("overrides", []))
    cfg = load_config(args.config, [*overrides, "device=cpu"])
    model, info = load_trained_model(cfg, args.checkpoint, "cpu")
    cats = model_categories(cfg, info["num_classes"])
    scenes = [read_image(work / im["file_name"]) for im in gt["images"]]
    kind = method["kind"]
    spec = None
    if kind in ("sliced", "sahi"):
        spec = SliceSpec(
            size=args.slice,
            overlap=args.overlap,
            scale=method.get("scale", 1.0),
            merge=args.merge,
            metric=args.match_metric,
            threshold=args.match_threshold,
            edge_margin=method.get("edge_margin", 2.0),
            batch_size=args.batch_size,
        )
    warm = torch.zeros(3, args.slice, args.slice, dtype=torch.uint8)
    with torch.inference_mode():
        model([warm.float() / 255])
    if kind == "sahi":
        run_one = _sahi_runner(model, cats, spec, no_grad=method.get("no_grad", False))
    elif kind == "whole":
        size = config_test_size(cfg)
        run_one = lambda im: predict_whole(model, [im], "cpu", size)[0]  # noqa: E731
    else:
        run_one = lambda im: predict_sliced(model, [im], spec, "cpu")[0]  # noqa: E731
    base = _rss_mb()
    records, seconds = [], 0.0
    for im, meta in zip(scenes, gt["images"]):
        start = time.perf_counter()
        det = run_one(im)
        seconds += time.perf_counter() - start
        records += detections_to_records(det, meta["id"], cats, len(records) + 1)
    Path(method["results"]).write_text(json.dumps(records))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "images": len(scenes), "peak_mb": peak, "base_mb": base}))


def _sahi_runner(model, cats, spec, no_grad: bool):
    """``image -> detections`` through SAHI's own slicing, prediction and merging."""
    import contextlib

    import torch
    from sahi.models.torchvision import TorchVisionDetectionModel
    from sahi.predict import get_sliced_prediction

    mapping = {str(k + 1): c["name"] for k, c in enumerate(cats)}
    wrapped = TorchVisionDetectionModel(
        model=model, confidence_threshold=0.0, category_mapping=mapping, device="cpu"
    )
    merge = {"nms": "NMS", "nmm": "GREEDYNMM"}[spec.merge]

    def run(image):
        arr = image.permute(1, 2, 0).contiguous().numpy()
        ctx = torch.inference_mode() if no_grad else contextlib.nullcontext()
        with ctx:
            res = get_sliced_prediction(
                arr,
                wrapped,
                slice_height=spec.size,
                slice_width=spec.size,
                overlap_height_ratio=spec.overlap,
                overlap_width_ratio=spec.overlap,
                perform_standard_pred=False,
                postprocess_type=merge,
                postprocess_match_metric=spec.metric.upper(),
                postprocess_match_threshold=spec.threshold,
                postprocess_class_agnostic=spec.class_agnostic,
                force_postprocess_type=True,
                verbose=0,
            )
        preds = res.object_prediction_list
        boxes = [[p.bbox.minx, p.bbox.miny, p.bbox.maxx, p.bbox.maxy] for p in preds]
        return {
            "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "scores": torch.tensor([p.score.value for p in preds], dtype=torch.float32),
            "labels": torch.tensor([int(p.category.id) for p in preds], dtype=torch.long),
        }

    return run


# -------------------------------------------------------------------------------------- main


def methods(args: argparse.Namespace, cfg, work: Path, area_ratio: int) -> list[dict]:
    """What to run, in order; ``area_ratio`` raises the whole-image pass's caps."""
    rpn, roi = cfg["model"]["rpn"], cfg["model"]["roi"]
    caps = [
        f"model.rpn.pre_nms_top_n_test={rpn['pre_nms_top_n_test'] * area_ratio}",
        f"model.rpn.post_nms_top_n_test={rpn['post_nms_top_n_test'] * area_ratio}",
        f"model.roi.detections_per_img={roi['detections_per_img'] * area_ratio}",
    ]
    out = [{"name": "whole", "kind": "whole", "overrides": caps}]
    for s in args.scales:
        out.append({"name": f"sliced x{s:g}", "kind": "sliced", "scale": s})
    out.append({"name": "sliced x1 sahi-merge", "kind": "sliced", "scale": 1.0, "edge_margin": -1})
    if args.sahi:
        out.append({"name": "sahi", "kind": "sahi"})
        out.append({"name": "sahi no-grad", "kind": "sahi", "no_grad": True})
    for m in out:
        m["results"] = str(work / f"results_{m['name'].replace(' ', '_')}.json")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", required=True, help="a trained model (model_final.pth)")
    ap.add_argument("--config", help="its config (default: config.yaml beside it)")
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="folder with images/ and SPLIT.json")
    ap.add_argument("--split", default="val")
    ap.add_argument("--canvas", type=int, default=4000, help="largest side of a scene, px")
    ap.add_argument("--max-images", type=int, default=0, help="use the first N images (0: all)")
    ap.add_argument("--slice", type=int, default=512)
    ap.add_argument("--overlap", type=float, default=0.2)
    ap.add_argument("--scales", default="1,2", help="comma-separated --slice-scale values")
    ap.add_argument("--merge", choices=["nms", "nmm"], default="nms")
    ap.add_argument("--match-metric", choices=["iou", "ios"], default="iou")
    ap.add_argument("--match-threshold", type=float, default=0.5)
    ap.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass (ours)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bins", default="aitod")
    ap.add_argument(
        "--categories",
        help="comma-separated category names or ids to score alone (default: all), e.g. car",
    )
    ap.add_argument("--repeats", type=int, default=1, help="timing rounds, in ABBA order (median)")
    ap.add_argument("--no-sahi", dest="sahi", action="store_false")
    ap.add_argument("--workdir", help="where the scenes go (default: a new temporary folder)")
    ap.add_argument("--json", help="write the table as JSON")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.config = args.config or str(Path(args.checkpoint).parent / "config.yaml")
    if args.child:
        child(args)
        return
    args.scales = [float(s) for s in args.scales.split(",") if s.strip()]
    if args.sahi:
        try:
            import sahi  # noqa: F401
        except ImportError:
            print("SAHI is not installed (pip install sahi): its rows are skipped", file=sys.stderr)
            args.sahi = False

    from detector.config import load_config
    from detector.evaluation import evaluate
    from detector.evaluation.coco_io import restrict_categories

    cfg = load_config(args.config)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_slicing_"))
    work.mkdir(parents=True, exist_ok=True)
    gt_path = build_mosaics(Path(args.data), args.split, args.canvas, args.max_images, work)
    gt = json.loads(gt_path.read_text())
    sizes = [(im["width"], im["height"]) for im in gt["images"]]
    area_ratio = max(1, math.ceil(max(w * h for w, h in sizes) / args.slice**2))
    print(
        f"{len(sizes)} scenes {', '.join(f'{w}x{h}' for w, h in sizes)} with "
        f"{len(gt['annotations'])} objects, in {work}; tiles {args.slice} px, overlap "
        f"{args.overlap}, merge {args.merge}/{args.match_metric} {args.match_threshold}, "
        f"{args.threads} threads",
        file=sys.stderr,
    )
    todo = methods(args, cfg, work, area_ratio)
    runs: dict[str, list[dict]] = {m["name"]: [] for m in todo}
    for r in range(args.repeats):  # ABBA order: a load that drifts favours no method
        for m in todo if r % 2 == 0 else todo[::-1]:
            cmd = [sys.executable, __file__, *sys.argv[1:], "--workdir", str(work)]
            cmd += ["--config", args.config, "--child", json.dumps(m)]
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
            if proc.returncode != 0:
                print(f"{m['name']}: failed\n{proc.stderr[-3000:]}", file=sys.stderr)
                continue
            runs[m["name"]].append(json.loads(proc.stdout.strip().splitlines()[-1]))
            print(f"{m['name']}: {runs[m['name']][-1]['seconds']:.1f} s", file=sys.stderr)
    rows = []
    for m in todo:
        if not runs[m["name"]]:
            continue
        got = runs[m["name"]]
        stats = {
            "seconds": statistics.median(s["seconds"] for s in got),
            "all_seconds": [s["seconds"] for s in got],
            "images": got[0]["images"],
            "peak_mb": max(s["peak_mb"] for s in got),
            "base_mb": min(s["base_mb"] for s in got),
        }
        max_dets = [1, 100, 10**5]  # a scene holds hundreds of cars: no cap on recall
        gt, results = str(gt_path), m["results"]
        if args.categories:  # KIT AIS val: 510 cars and 9 buses/minibuses the model rarely finds
            gt, results = restrict_categories(gt, results, args.categories.split(","))
        report = evaluate(gt, results, bins=args.bins, max_dets=max_dets, errors=False)
        rows.append({"method": m["name"], **stats, "summary": report.to_dict()})
    print_table(rows, args)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


def print_table(rows: list[dict], args: argparse.Namespace) -> None:
    if not rows:
        return
    from detector.utils.bins import get_bins

    bins = [b.name for b in get_bins(args.bins) if b.name != "all"]
    sahi = next((r for r in rows if r["method"] == "sahi"), None)
    head = ["method", "AP", "AP50", *[f"AP {b}" for b in bins], "img/s", "vs sahi", "peak MB"]
    print("| " + " | ".join(head) + " |")
    print("|---" * len(head) + "|")
    for r in rows:
        s = r["summary"]
        ips = r["images"] / r["seconds"] if r["seconds"] else 0.0
        ratio = (
            f"{ips / (sahi['images'] / sahi['seconds']):.2f}x" if sahi and sahi["seconds"] else ""
        )

        def pct(key: str, s=s) -> str:
            v = s.get(key)
            return "–" if v is None or v < 0 else f"{100 * v:.1f}"

        cells = [r["method"], pct("AP"), pct("AP50"), *[pct(f"AP_{b}") for b in bins]]
        cells += [f"{ips:.3f}", ratio, f"{r['peak_mb']:.0f} (+{r['peak_mb'] - r['base_mb']:.0f})"]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
