"""``smalldet info``: a model's parameters, FLOPs, output stride, feature size, per-stage
receptive field and HDC verdict (``tools/model_info.py`` is the same command).

    smalldet info --config configs/faster_rcnn_r50_dc5.yaml --input-size 512 512
    smalldet info --config configs/faster_rcnn_r18_dc5_hdc.yaml --json

Exit codes: 0 printed; 2 a config error (any SmalldetError, e.g. an HDC rule under
``hdc_check: error``) or a config file that cannot be read; argparse usage errors are 2 as well.
"""

from __future__ import annotations

import argparse
import json

from detector.cli.main import guarded

ERROR_EXIT = 2


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


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
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
    return parser


def run(args: argparse.Namespace) -> int:
    from detector.config import load_config
    from detector.models import format_info, model_info

    cfg = load_config(args.config, args.opts)
    info = model_info(cfg, tuple(args.input_size), detector_flops=args.detector_flops)
    if args.erf:
        info.update(_erf(cfg, args.input_size, args.erf))
    if args.json:
        print(json.dumps(info))
    else:
        print(format_info(info))
        if args.erf:
            print(f"ERF: 95% of the gradient mass within +-{info['erf_radius95']} px ({args.erf})")
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if min(args.input_size) < 32:
        parser.error("--input-size must be at least 32 x 32")
    return guarded(lambda: run(args), ERROR_EXIT)
