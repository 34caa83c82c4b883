#!/usr/bin/env python
"""Trainer throughput against a bare training loop over the same model, data and optimizer.

    python benchmarks/bench_trainer.py [--iters 20] [--warmup 5] [--reps 2] [--size 128]

Both loops run in this process, interleaved (bare, trainer, bare, trainer, ...) so that drift in
the machine's load hits both; the reported figure is the median of the per-pair ratios
``trainer it/s / bare it/s`` (target: >= 0.97).

- bare: ``next(loader)`` -> ``sum(model(images, targets).values())`` -> zero_grad, backward,
  step, scheduler step. Nothing else: no loss read-back, no logging.
- trainer: :class:`detector.engine.trainer.Trainer` as a user runs it (TensorBoard and
  metrics.jsonl on, progress bar on stderr, the per-iteration finite-loss check), timed from the
  ``metrics.jsonl`` timestamps of iteration ``warmup`` to ``warmup + iters``; set-up, the final
  checkpoint and ``model_final.pth`` are outside the timed window.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from detector.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def make_cfg(args, out: Path):
    return load_config(
        ROOT / "configs" / "faster_rcnn_r18_dc5.yaml",
        [
            "model.backbone.hdc_check=off",
            "model.anchors.sizes=[8,16,32,64,128]",
            "model.anchors.aspect_ratios=[1.0]",
            f"data.builtin.image_size={args.size}",
            "data.builtin.num_train=64",
            "data.builtin.num_val=4",
            f"data.builtin.cache_dir={out / 'cache'}",
            "data.num_workers=0",
            f"solver.ims_per_batch={args.batch}",
            "solver.optimizer=adamw",
            "solver.lr=0.0005",
            "solver.warmup_iters=5",
            f"solver.max_iter={args.warmup + args.iters}",
            "checkpoint.period=0",
            "eval.period=0",
            "eval.final=false",
            "eval.vis_images=0",
            f"log.period={args.warmup}" if args.iters % args.warmup == 0 else "log.period=1",
            "seed=0",
        ],
    )


def bare_loop(cfg, args) -> float:
    from detector.data import build_dataset, build_train_loader
    from detector.engine.optim import build_optimizer, build_scheduler
    from detector.models import build_detector

    ds = build_dataset(cfg, "train")
    torch.manual_seed(cfg.seed)
    model = build_detector(cfg, num_classes=ds.num_classes)
    model.train()
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt, cfg.solver.max_iter)
    it = iter(build_train_loader(cfg, ds))
    t0 = 0.0
    for i in range(args.warmup + args.iters):
        if i == args.warmup:
            t0 = time.perf_counter()
        images, targets = next(it)
        loss = sum(model(images, targets).values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    return args.iters / (time.perf_counter() - t0)


def trainer_loop(cfg, args, out: Path) -> float:
    from detector.engine.trainer import Trainer

    Trainer(cfg, out).run()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    times = {r["iteration"]: r["time"] for r in rows if r["type"] == "train"}
    a, b = args.warmup, args.warmup + args.iters
    return args.iters / (times[b] - times[a])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--iters", type=int, default=20, help="timed iterations per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed iterations first")
    p.add_argument("--reps", type=int, default=2, help="bare/trainer pairs")
    p.add_argument("--size", type=int, default=128, help="image side (px)")
    p.add_argument("--batch", type=int, default=2)
    args = p.parse_args()
    if args.iters % args.warmup:
        p.error("--iters must be a multiple of --warmup (the log period)")
    ratios, bares, trains = [], [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for rep in range(args.reps):
            cfg = make_cfg(args, tmp)
            bare = bare_loop(cfg, args)
            trainer = trainer_loop(cfg, args, tmp / f"run{rep}")
            bares.append(bare)
            trains.append(trainer)
            ratios.append(trainer / bare)
            print(
                f"rep {rep}: bare {bare:.3f} it/s  trainer {trainer:.3f} it/s  ratio {trainer / bare:.3f}"
            )
    print(
        f"\nmedian: bare {statistics.median(bares):.3f} it/s, trainer {statistics.median(trains):.3f} "
        f"it/s, ratio {statistics.median(ratios):.3f} (target >= 0.97); "
        f"torch threads {torch.get_num_threads()}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
