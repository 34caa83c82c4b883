"""``smalldet analyze-dilation``: receptive field, gridding holes and HDC verdict of a stack of
dilated convs (``tools/analyze_dilation.py`` is the same command).

    smalldet analyze-dilation --kernel 3 --dilations 1,2,5 --plot coverage.png
    smalldet analyze-dilation --kernel 3 --dilations 2,2,2 --json

Exit codes: 0 printed; 2 a bad ``--kernel``/``--dilations`` (argparse usage error) or a
``--plot`` path that cannot be written.
"""

from __future__ import annotations

import argparse
import json

from detector.cli.main import guarded

ERROR_EXIT = 2


def _rates(text: str) -> list[int]:
    try:
        rates = [int(t) for t in text.replace(" ", "").split(",") if t]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"dilations must be comma-separated ints, got {text!r}"
        ) from None
    if not rates or any(r <= 0 for r in rates):
        raise argparse.ArgumentTypeError(f"dilations must be positive ints, got {text!r}")
    return rates


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("--kernel", type=int, default=3)
    parser.add_argument("--dilations", type=_rates, required=True, help="e.g. 1,2,5")
    parser.add_argument("--plot", help="write the 2-D coverage heatmap to this PNG")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    return parser


def run(args: argparse.Namespace) -> int:
    from detector.models import check_hdc, coverage, dilated_stack, plot_coverage
    from detector.models import receptive_field as rf_walk

    size = 4 * sum(args.dilations) * args.kernel + 1
    layers = rf_walk(dilated_stack(args.kernel, args.dilations), (1, 1, size, size))
    cov = coverage(args.kernel, args.dilations)
    verdict = check_hdc(args.dilations, args.kernel)
    if args.plot:
        plot_coverage(cov, args.plot)
    result = {
        "kernel": args.kernel,
        "dilations": args.dilations,
        "layers": [layer.to_dict() for layer in layers],
        "receptive_field": layers[-1].rf,
        "holes": cov.holes,
        "holes_1d": cov.holes_1d,
        "used_fraction": cov.used_fraction,
        "hdc_valid": verdict.valid,
        "hdc": verdict.to_dict(),
        "plot": args.plot,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"kernel {args.kernel}, dilations {args.dilations}")
    print("layer  rate  k'   RF  jump")
    for i, layer in enumerate(layers, 1):
        print(f"{i:5d} {layer.dilation:5d} {layer.k_eff:3d} {layer.rf:4d} {layer.jump:5d}")
    print(f"receptive field: {result['receptive_field']}")
    rf = result["receptive_field"]
    print(f"unused positions: {cov.holes} of {rf * rf} ({cov.holes_1d} of {rf} per axis)")
    print(f"HDC: {'valid' if verdict.valid else 'invalid'} - {verdict.message}")
    if args.plot:
        print(f"coverage heatmap: {args.plot}")
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.kernel < 1 or args.kernel % 2 == 0:
        parser.error(f"--kernel must be an odd positive int, got {args.kernel}")
    return guarded(lambda: run(args), ERROR_EXIT)
