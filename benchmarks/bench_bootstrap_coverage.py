"""Do the bootstrap's 95% intervals cover? A coverage study on generated populations.

For each scenario a large population of images (GT boxes of small sizes and the detections of
two detector models with known behaviour, :func:`detector.evaluation.synthetic.make_population`)
is generated and its AP computed once, on all of it: that is the value a test set estimates.
Then many small test sets are drawn from it (without replacement, as many images as the
project's val sets have), each gets the paired image-level bootstrap of
:func:`detector.evaluation.bootstrap.bootstrap_runs` (one resample draw for both detectors, the
same code path as ``smalldet compare`` and the study report), and every interval method is
scored on the same resamples: does the interval hold the population's AP of each detector, and
of the difference B - A?

    python benchmarks/bench_bootstrap_coverage.py        # defaults: about 4.5 min on one core
    python benchmarks/bench_bootstrap_coverage.py --sets 100 --scenarios cars13 --json out.json

Coverage is printed with its binomial standard error, ``sqrt(p (1 - p) / sets)``, the test sets
a method covers and the percentile interval misses (and the reverse: all methods see the same
sets, so these paired counts compare methods more sharply than two coverages), and the share
of misses on each side (an interval that misses mostly on one side is biased, not just narrow).
Run it single-threaded (``OMP_NUM_THREADS=1``); results depend only on the arguments.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from detector.evaluation.synthetic import (  # noqa: E402
    DetectorModel,
    Scene,
    coverage_draws,
    make_population,
    population_truth,
)
from detector.utils.bins import ALL  # noqa: E402


@dataclass(frozen=True)
class Scenario:
    """A population and the size of the test sets drawn from it."""

    name: str
    about: str
    images: int  # per test set
    scene: Scene
    a: DetectorModel
    b: DetectorModel
    max_dets: tuple[int, ...] = (1, 10, 100)
    keys: tuple[str, ...] = ("AP", "AP50")


SCENARIOS = {
    "cars13": Scenario(
        "cars13",
        "13 images of ~40 cars (16-64 px, one class), AP ~50: like the aerial cars' val set",
        13,
        Scene(
            gt_per_image=40,
            dispersion=3,
            min_side=16,
            max_side=64,
            n_cats=1,
            image_size=1024,
            difficulty_sd=0.5,
            hardness_sd=0.8,
        ),
        DetectorModel(
            recall_logit=2.5,
            recall_slope=1.0,
            loc_px=0.5,
            loc_rel=0.035,
            confusion=0,
            duplicates=0.1,
            fp_per_image=8,
            tp_score=1.0,
            fp_score=-1.0,
        ),
        DetectorModel(
            recall_logit=2.0,
            recall_slope=1.5,
            loc_px=0.6,
            loc_rel=0.045,
            confusion=0,
            duplicates=0.15,
            fp_per_image=12,
            tp_score=0.8,
            fp_score=-1.0,
        ),
        max_dets=(1, 100, 300),
    ),
    "mixed30": Scenario(
        "mixed30",
        "30 images of ~12 objects (8-64 px, 3 classes), AP ~12-17: a mid-sized val set",
        30,
        Scene(
            gt_per_image=12,
            dispersion=2,
            min_side=8,
            max_side=64,
            n_cats=3,
            image_size=640,
            difficulty_sd=0.6,
            hardness_sd=0.9,
        ),
        DetectorModel(
            recall_logit=1.0,
            recall_slope=1.0,
            loc_px=0.6,
            loc_rel=0.07,
            confusion=0.25,
            duplicates=0.2,
            fp_per_image=15,
            tp_score=0.5,
            fp_score=-1.0,
        ),
        DetectorModel(
            recall_logit=1.3,
            recall_slope=0.8,
            loc_px=0.5,
            loc_rel=0.06,
            confusion=0.2,
            duplicates=0.2,
            fp_per_image=15,
            tp_score=0.5,
            fp_score=-1.0,
        ),
    ),
    "builtin60": Scenario(
        "builtin60",
        "60 images of ~19 objects (4-96 px, 5 look-alike classes), AP ~3: like the built-in val",
        60,
        Scene(
            gt_per_image=19,
            dispersion=1.5,
            min_side=4,
            max_side=96,
            n_cats=5,
            image_size=512,
            difficulty_sd=0.7,
            hardness_sd=1.0,
        ),
        DetectorModel(
            recall_logit=0.5,
            recall_slope=1.0,
            loc_px=0.7,
            loc_rel=0.1,
            confusion=0.5,
            duplicates=0.3,
            fp_per_image=30,
            tp_score=0.0,
            fp_score=-0.5,
        ),
        DetectorModel(
            recall_logit=1.0,
            recall_slope=0.7,
            loc_px=0.5,
            loc_rel=0.1,
            confusion=0.45,
            duplicates=0.3,
            fp_per_image=30,
            tp_score=0.0,
            fp_score=-0.5,
        ),
    ),
}
TARGETS = ("A", "B", "B-A")  # coverage_draws' targets "0", "1", "1-0"


def run_scenario(
    sc: Scenario, sets: int, resamples: int, population: int, seed: int, level: float = 0.95
) -> dict:
    """Coverage of every method on ``sets`` test sets of ``sc.images`` images."""
    t0 = time.perf_counter()
    gt, dets = make_population(population, sc.scene, [sc.a, sc.b], seed=seed)
    truth = population_truth(gt, dets, list(sc.keys), sc.max_dets, bins=[ALL])
    truth = np.concatenate([truth, truth[1:] - truth[:1]])  # (targets, keys)
    t_pop = time.perf_counter() - t0
    d = coverage_draws(
        gt, dets, list(sc.keys), sc.images, sets, resamples, seed, sc.max_dets, [ALL], level
    )
    elapsed = time.perf_counter() - t0
    rows = []
    for ti, t in enumerate(TARGETS):
        for j, k in enumerate(sc.keys):
            est, th = d["estimates"][:, ti, j], truth[ti, j]
            pct = d["ci"]["percentile"][:, ti, j]
            pct_hit = (pct[:, 0] <= th) & (th <= pct[:, 1])
            for m, ci in d["ci"].items():
                lo, hi = ci[:, ti, j, 0], ci[:, ti, j, 1]
                hit = (lo <= th) & (th <= hi)
                p = float(np.mean(hit))
                rows.append(
                    {
                        "target": t,
                        "key": k,
                        "method": m,
                        "coverage": p,
                        "se": math.sqrt(p * (1 - p) / sets),
                        "gained_vs_percentile": int((hit & ~pct_hit).sum()),
                        "lost_vs_percentile": int((~hit & pct_hit).sum()),
                        "miss_below": float(np.mean(hi < th)),
                        "miss_above": float(np.mean(lo > th)),
                        "median_width": float(np.nanmedian(hi - lo)),
                        "truth": float(th),
                        "estimate_bias": float(np.nanmean(est) - th),
                        "bootstrap_shift": float(np.nanmean(d["boot_median"][:, ti, j] - est)),
                        "sd_over_sets": float(np.nanstd(est, ddof=1)),
                        "bootstrap_sd": float(np.sqrt(np.nanmean(d["boot_sd"][:, ti, j] ** 2))),
                    }
                )
    return {
        "scenario": sc.name,
        "about": sc.about,
        "images_per_set": sc.images,
        "sets": sets,
        "resamples": resamples,
        "population_images": population,
        "population_gt": int(len(gt.img)),
        "seed": seed,
        "level": level,
        "scene": asdict(sc.scene),
        "detectors": {"A": asdict(sc.a), "B": asdict(sc.b)},
        "max_dets": list(sc.max_dets),
        "seconds": elapsed,
        "population_seconds": t_pop,
        "rows": rows,
    }


def markdown(res: dict) -> str:
    """One table per scenario: coverage ± SE per target, key and method."""
    lines = [
        f"### {res['scenario']}: {res['about']}",
        "",
        f"{res['sets']} test sets of {res['images_per_set']} images from a population of "
        f"{res['population_images']} images ({res['population_gt']} GT), {res['resamples']} "
        f"resamples each, seed {res['seed']}, maxDets {res['max_dets']}; "
        f"{res['seconds']:.0f} s ({res['population_seconds']:.0f} s of it for the population).",
        "",
        "| target | metric | population | estimate bias | bootstrap shift | SD over sets "
        "/ bootstrap SD | method | coverage ± SE | sets gained / lost vs percentile "
        "| missed: CI below / above | median width |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in res["rows"]:
        lines.append(
            f"| {r['target']} | {r['key']} | {100 * r['truth']:.2f} | "
            f"{100 * r['estimate_bias']:+.2f} | {100 * r['bootstrap_shift']:+.2f} | "
            f"{100 * r['sd_over_sets']:.2f} / {100 * r['bootstrap_sd']:.2f} | "
            f"{r['method']} | {100 * r['coverage']:.1f} ± {100 * r['se']:.1f} | "
            f"+{r['gained_vs_percentile']} / −{r['lost_vs_percentile']} | "
            f"{100 * r['miss_below']:.1f} / {100 * r['miss_above']:.1f} | "
            f"{100 * r['median_width']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma-separated names")
    p.add_argument("--sets", type=int, default=200, help="test sets per scenario")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples per set")
    p.add_argument("--population", type=int, default=20000, help="images in the population")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--level", type=float, default=0.95)
    p.add_argument("--json", help="write all numbers and settings here")
    args = p.parse_args(argv)
    names = [s for s in args.scenarios.split(",") if s]
    unknown = [s for s in names if s not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenarios {unknown}: choose from {list(SCENARIOS)}")
    print(
        f"bootstrap coverage: {args.sets} sets x {args.resamples} resamples per scenario, "
        f"population {args.population} images, seed {args.seed}, level {args.level}, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}",
        flush=True,
    )
    results = []
    for name in names:
        res = run_scenario(
            SCENARIOS[name], args.sets, args.resamples, args.population, args.seed, args.level
        )
        results.append(res)
        print(markdown(res), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
