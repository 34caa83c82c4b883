#!/usr/bin/env python
"""Print a model's parameters, FLOPs, output stride, feature size, per-stage receptive field
and HDC verdict.

    python tools/model_info.py --config configs/faster_rcnn_r50_dc5.yaml --input-size 512 512
    python tools/model_info.py --config configs/faster_rcnn_r18_dc5_hdc.yaml --json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.config import ConfigError, load_config  # noqa: E402
from detector.models import format_info, model_info  # noqa: E402


def _erf(cfg, input_size: list[int], path: str) -> dict:
    import warnings

    from detector.models import build_backbone, effective_receptive_field, plot_erf
    from detector.models.erf import erf_radius

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the HDC verdict is already in the report
        backbone = build_backbone(cfg)
    size = min(input_size)
    erf = effective_receptive_field(backbone, input_size=size, n_inputs=4)
    title = f"ERF {cfg.model.variant} R{cfg.model.backbone.depth} ({size}x{size})"
    plot_erf(erf, path, title=title)
    return {"erf_png": path, "erf_radius95": erf_radius(erf, 0.95)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="YAML config file")
    parser.add_argument("--input-size", nargs=2, type=int, default=[512, 512], metavar=("H", "W"))
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument(
        "--detector-flops",
        action="store_true",
        help="also count the whole detector's FLOPs in eval mode (slower)",
    )
    parser.add_argument(
        "--erf",
        metavar="PNG",
        help="also measure the effective receptive field (gradients) and save its heatmap",
    )
    parser.add_argument("opts", nargs="*", help="config overrides KEY=VALUE")
    args = parser.parse_args(argv)
    if min(args.input_size) < 32:
        parser.error("--input-size must be at least 32 x 32")
    try:
        cfg = load_config(args.config, args.opts)
        info = model_info(cfg, tuple(args.input_size), detector_flops=args.detector_flops)
        if args.erf:
            info.update(_erf(cfg, args.input_size, args.erf))
    except (ConfigError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(info))
    else:
        print(format_info(info))
        if args.erf:
            print(f"ERF: 95% of the gradient mass within +-{info['erf_radius95']} px ({args.erf})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
