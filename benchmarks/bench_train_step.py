#!/usr/bin/env python
"""Training-step time of every variant of a study, against the study's baseline, on the same
real batches, so that "equal wall-clock" comparisons do not lean on timings taken while other
jobs shared the machine.

    python benchmarks/bench_train_step.py studies/aerial_cars_dilated.yaml [--iters 5] [--reps 3]

Each variant's model and optimizer are built from its study config (common overrides, then the
variant's). The first ``batches`` training batches of the data pipeline are loaded once and
reused by every variant. The variants then run in turns (A, B, C, A, B, C, ...) for ``reps``
rounds of ``iters`` timed steps (forward, backward, optimizer step) after ``warmup`` untimed
ones, so drift in the machine's load hits all of them. Printed per variant: median s/iter, the
ratio to the baseline measured in the same run, and the iterations that fit the baseline's
``solver.max_iter`` wall-clock.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

from detector.config import load_config
from detector.data import build_dataset
from detector.data.loader import build_train_loader
from detector.engine.optim import build_optimizer
from detector.models import build_detector
from detector.study import load_study

ROOT = Path(__file__).resolve().parents[1]


def _step(model, optimizer, images, targets) -> None:
    loss = sum(model(images, targets).values())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("study", help="study YAML (its variants, common overrides and baseline)")
    p.add_argument("--variants", default="", help="comma-separated subset (default: all)")
    p.add_argument("--iters", type=int, default=5, help="timed steps per turn")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps before each variant")
    p.add_argument("--reps", type=int, default=3, help="rounds of turns")
    p.add_argument("--batches", type=int, default=4, help="distinct real batches to cycle")
    p.add_argument("--threads", type=int, default=1, help="torch threads (a study run uses 1)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    spec = load_study(args.study)
    names = args.variants.split(",") if args.variants else list(spec.variants)
    if spec.baseline not in names:
        names.insert(0, spec.baseline)
    cfgs = {}
    for name in names:
        if name not in spec.variants:
            p.error(f"unknown variant {name!r}; the study has {', '.join(spec.variants)}")
        v = spec.variants[name]
        cfgs[name] = load_config(v.config, [*spec.common, *v.overrides, "data.num_workers=0"])

    base_cfg = cfgs[spec.baseline]
    dataset = build_dataset(base_cfg, "train")
    loader = iter(build_train_loader(base_cfg, dataset))
    batches = [next(loader) for _ in range(args.batches)]

    def data_key(cfg):
        return cfg.data.train_ann, cfg.data.transforms.crop_size, cfg.solver.ims_per_batch

    for name, cfg in cfgs.items():
        # the batches are the baseline's: say so when a variant would have loaded other data
        if data_key(cfg) != data_key(base_cfg):
            print(
                f"note: {name} trains on other data/batches ({data_key(cfg)}); timed on the baseline's"
            )
    print(
        f"{len(batches)} batches of {len(batches[0][0])} real training images "
        f"({tuple(batches[0][0][0].shape[-2:])} crops), {args.threads} thread(s)"
    )

    models = {}
    for name, cfg in cfgs.items():
        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build_detector(cfg, num_classes=dataset.num_classes)
        model.train()
        models[name] = (model, build_optimizer(cfg, model))

    times: dict[str, list[float]] = {n: [] for n in names}
    k = 0
    for _ in range(args.reps):
        for name in names:
            model, opt = models[name]
            for _ in range(args.warmup):
                images, targets = batches[k % len(batches)]
                _step(model, opt, list(images), list(targets))
                k += 1
            t0 = time.perf_counter()
            for _ in range(args.iters):
                images, targets = batches[k % len(batches)]
                _step(model, opt, list(images), list(targets))
                k += 1
            times[name].append((time.perf_counter() - t0) / args.iters)

    base = statistics.median(times[spec.baseline])
    max_iter = int(base_cfg.solver.max_iter)
    print(f"\n{'variant':<24}{'s/iter':>9}{'vs ' + spec.baseline:>12}{'iters in its time':>20}")
    for name in names:
        s = statistics.median(times[name])
        print(f"{name:<24}{s:>9.2f}{s / base:>11.2f}x{round(max_iter * base / s):>20}")
    print(f"(iters in its time: steps that fit {spec.baseline}'s {max_iter} iterations)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
