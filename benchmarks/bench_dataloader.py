"""Data-loading throughput over the built-in dataset, against a training step's time.

    python benchmarks/bench_dataloader.py [--workers 0,1,2] [--batches 40] [--image-size 256]
        [--train-step] [--variant c5]

Prints images/s of the training loader (decode + train transforms + collate) for each worker
count, as ratios to the single-process loader, and, with ``--train-step``, the images/s of one
Faster R-CNN training iteration at the same size (forward + backward + SGD step) so that you
can see whether loading could bottleneck training: it does not when loader images/s is well
above training images/s.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

from detector.config.loader import load_config
from detector.data import build_dataset, build_train_loader


def loader_rate(cfg, ds, workers: int, batches: int) -> tuple[float, float]:
    """(images/s in steady state, seconds to the first batch incl. worker start-up)."""
    cfg.data.num_workers = workers
    t0 = time.perf_counter()
    it = iter(build_train_loader(cfg, ds))
    next(it)
    first = time.perf_counter() - t0
    # drain what the workers prefetched while we waited, so the rate is the steady state
    for _ in range(workers * 4):
        next(it)
    n = 0
    t0 = time.perf_counter()
    for _ in range(batches):
        images, _ = next(it)
        n += len(images)
    rate = n / (time.perf_counter() - t0)
    del it
    return rate, first


def train_rate(cfg, ds, steps: int, device: torch.device) -> float | None:
    try:
        from detector.models import build_detector
    except ImportError as err:  # models not available: no comparison
        print(f"(no train-step comparison: {err})")
        return None
    torch.manual_seed(0)
    model = build_detector(cfg, num_classes=ds.num_classes).to(device)
    model.train()
    opt = torch.optim.SGD(
        [p for p in model.parameters() if p.requires_grad], lr=0.001, momentum=0.9
    )
    cfg.data.num_workers = 0
    it = iter(build_train_loader(cfg, ds))
    batches = [next(it) for _ in range(steps + 1)]
    times = []
    for k, (images, targets) in enumerate(batches):
        images = [im.to(device) for im in images]
        targets = [
            {"boxes": t["boxes"].to(device), "labels": t["labels"].to(device)} for t in targets
        ]
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        losses = model(images, targets)
        loss = sum(losses.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if k > 0:  # the first step pays one-off allocation costs
            times.append(time.perf_counter() - t0)
    return len(batches[0][0]) * len(times) / sum(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", default="0,1,2")
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--num-images", type=int, default=300)
    p.add_argument("--image-size", type=int, default=256)
    p.add_argument("--crop", type=int, default=0, help="data.transforms.crop_size")
    p.add_argument("--train-step", action="store_true", help="also time a training iteration")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--variant", default="dc5", help="model.variant for --train-step")
    p.add_argument("--depth", type=int, default=18)
    p.add_argument(
        "--device", default="auto", help="device of the training step: auto | cpu | cuda"
    )
    args = p.parse_args(argv)

    cfg = load_config(
        None,
        [
            f"data.builtin.num_train={args.num_images}",
            f"data.builtin.image_size={args.image_size}",
            f"data.transforms.crop_size={args.crop}",
            "data.transforms.scale_jitter=[0.8,1.25]",
            f"solver.ims_per_batch={args.batch_size}",
            f"model.variant={args.variant}",
            f"model.backbone.depth={args.depth}",
        ],
    )
    t0 = time.perf_counter()
    ds = build_dataset(cfg, "train")
    print(
        f"built-in train set: {len(ds)} images {args.image_size}px "
        f"(ready in {time.perf_counter() - t0:.1f}s), batch {args.batch_size}, "
        f"hflip + scale jitter [0.8, 1.25], torch threads {torch.get_num_threads()}, "
        f"cpus {os.cpu_count()}"
    )
    rates = {}
    for w in (int(x) for x in args.workers.split(",")):
        rate, first = loader_rate(cfg, ds, w, args.batches)
        rates[w] = rate
        print(f"  workers={w}: {rate:8.1f} images/s (first batch after {first:.2f}s)")
    base = rates.get(0) or next(iter(rates.values()))
    print("  ratio to workers=0: " + ", ".join(f"{w}: {r / base:.2f}x" for w, r in rates.items()))
    if args.train_step:
        dev = args.device
        if dev == "auto":
            dev = "cuda" if torch.cuda.is_available() else "cpu"
        tr = train_rate(cfg, ds, args.steps, torch.device(dev))
        if tr:
            best = max(rates.values())
            print(
                f"training step ({args.variant} R{args.depth}, batch {args.batch_size}, {dev}): "
                f"{tr:.1f} images/s; loader/training = {best / tr:.1f}x "
                f"({'not a bottleneck' if best > 2 * tr else 'LOADING MAY BOTTLENECK'})"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
