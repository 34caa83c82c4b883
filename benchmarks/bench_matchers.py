#!/usr/bin/env python
"""Time of the RPN's label assignment per image, each matcher against ``iou`` in the same run.

    python benchmarks/bench_matchers.py [--ann ../shared/data/kit_ais_aerial_cars/train.json] \\
        [--config configs/aerial_cars_dc5.yaml --config configs/aerial_cars.yaml] [--reps 3]

A matcher must not make a training step measurably slower. The step itself is seconds on this
CPU and too noisy to show a difference of a few per cent (``bench_train_step.py`` measures it);
the assignment alone is what a matcher changes, so this times exactly that: for every image of
the annotation file, the anchors the model places on it (its own generator, at the image's size)
matched to its boxes by :func:`detector.models.matchers.match_anchors`, the code training runs.
The matchers run in turns (iou, nwd, rfla, iou, ...) for ``reps`` rounds; printed per config and
matcher: median ms per image and the ratio to ``iou`` in the same round.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from detector.config import load_config
from detector.data.validation import load_coco_json
from detector.models.anchor_coverage import feature_grid, image_anchors, matching_model
from detector.models.matchers import RPN_MATCHERS, match_anchors
from detector.models.receptive_field import feature_receptive_fields

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "kit_ais_aerial_cars"


def _cases(cfg, data: dict) -> tuple[object, list]:
    """The RPN of ``cfg`` and, per image, (anchors, boxes, levels), built once."""
    model = matching_model(cfg)
    maps = feature_receptive_fields(model.backbone)
    names, strides = list(maps), [m["stride"] for m in maps.values()]
    boxes_of: dict = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0) and a["bbox"][2] > 0 and a["bbox"][3] > 0:
            boxes_of.setdefault(a["image_id"], []).append(a["bbox"])
    cases = []
    for im in data["images"]:
        if im["id"] not in boxes_of:
            continue
        h, w = im["height"], im["width"]
        anchors = image_anchors(model.rpn.anchor_generator, strides, h, w)
        xywh = torch.tensor(boxes_of[im["id"]], dtype=anchors.dtype)
        gt = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        levels = [(n, gh, gw) for n, (gh, gw) in zip(names, feature_grid(strides, h, w))]
        cases.append((anchors, gt, levels))
    return model.rpn, cases


def _time(rpn, cases) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        for anchors, gt, levels in cases:
            match_anchors(rpn, anchors, gt, levels)
    return (time.perf_counter() - t0) / len(cases)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ann", default=str(DATA / "train.json"), help="COCO annotation JSON")
    p.add_argument("--config", action="append", help="config (repeat); default: dc5, dc4, fpn")
    p.add_argument("--reps", type=int, default=3, help="rounds of turns")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a study run uses 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if not Path(args.ann).is_file():
        p.error(f"{args.ann} not found (the shared data lives in ../shared/data)")
    data, _ = load_coco_json(args.ann)
    configs = args.config or [
        str(ROOT / "configs/aerial_cars_dc5.yaml"),
        str(ROOT / "configs/aerial_cars_dc5.yaml") + ":dc4",
        str(ROOT / "configs/aerial_cars.yaml"),
    ]
    print(
        f"{len(data['images'])} images of {args.ann}; {args.threads} thread(s), {args.reps} rounds"
    )
    print("| config | matcher | ms/image (median) | vs iou |")
    print("|---|---|---|---|")
    for spec in configs:
        path, _, variant = spec.partition(":")
        extra = [f"model.variant={variant}", "model.anchors.sizes=[20,28,40]"] if variant else []
        runs = {}
        for matcher in RPN_MATCHERS:
            cfg = load_config(path, [*extra, f"model.rpn.matcher={matcher}"])
            runs[matcher] = _cases(cfg, data)
        times: dict[str, list[float]] = {m: [] for m in RPN_MATCHERS}
        for _ in range(args.reps):
            for matcher, (rpn, cases) in runs.items():
                times[matcher].append(_time(rpn, cases))
        base = statistics.median(times["iou"])
        name = f"{Path(path).stem}{' ' + variant if variant else ''}"
        for matcher in RPN_MATCHERS:
            t = statistics.median(times[matcher])
            print(f"| {name} | {matcher} | {1000 * t:.1f} | {t / base:.2f}x |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
