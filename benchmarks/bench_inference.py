#!/usr/bin/env python
"""Inference cost of detector configs on this machine: seconds per image and peak memory.

    python benchmarks/bench_inference.py [--size 512] [--images 5] [--threads 2] \
        [CONFIG ...]   # default: the R50 c5, dc5, dc5_reduced and fpn configs

Each config runs in its own subprocess (so the peak RSS belongs to that model alone), in eval
mode at batch 1 on random weights, with ``rpn.post_nms_top_n_test`` at the config's value. The
first image is a warm-up; the median of the rest is reported, with the ratio to the first config
measured in the same run. On CUDA the peak is ``max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT = [f"configs/faster_rcnn_r50_{v}.yaml" for v in ("c5", "dc5", "dc5_reduced", "fpn")]


def measure(config: str, size: int, images: int, threads: int, device: str) -> dict:
    import torch

    from detector.config import load_config
    from detector.models import build_detector

    torch.set_num_threads(threads)
    cfg = load_config(ROOT / config, ["model.backbone.hdc_check=off", "model.num_classes=1"])
    model = build_detector(cfg, num_classes=1).eval().to(device)
    torch.manual_seed(0)
    x = [torch.rand(3, size, size, device=device)]
    times = []
    with torch.inference_mode():
        for _ in range(images + 1):
            t0 = time.perf_counter()
            model(x)
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - t0)
    peak = (
        torch.cuda.max_memory_allocated() / 2**20
        if device.startswith("cuda")
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    )
    params = sum(p.numel() for p in model.parameters())
    return {
        "config": config,
        "s_per_img": statistics.median(times[1:]),
        "peak_mb": peak,
        "params_m": params / 1e6,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("configs", nargs="*", default=DEFAULT)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--images", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(
            json.dumps(measure(args.configs[0], args.size, args.images, args.threads, args.device))
        )
        return
    rows = []
    for config in args.configs:
        cmd = [
            sys.executable,
            __file__,
            config,
            "--child",
            "--size",
            str(args.size),
            "--images",
            str(args.images),
            "--threads",
            str(args.threads),
            "--device",
            args.device,
        ]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1]))
    base = rows[0]
    print(
        f"inference at {args.size}x{args.size}, batch 1, {args.device}, {args.threads} threads, "
        f"median of {args.images} images after 1 warm-up; ratios vs {base['config']}"
    )
    print("| config | params (M) | s/img | x baseline | peak MB |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {Path(r['config']).stem} | {r['params_m']:.1f} | {r['s_per_img']:.3f} | "
            f"{r['s_per_img'] / base['s_per_img']:.2f} | {r['peak_mb']:.0f} |"
        )


if __name__ == "__main__":
    main()
