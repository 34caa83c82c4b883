"""``smalldet anchor-coverage``: how well each config's anchors cover a dataset's boxes, per
size bin: the best anchor IoU, the share of boxes with an anchor above the RPN's positive
threshold, and the share that only get the RPN's fallback match. No training; it uses the
model's own anchor generator (``tools/anchor_coverage.py`` is the same command).

    smalldet anchor-coverage --ann ../shared/data/kit_ais_aerial_cars/train.json \\
        --config configs/aerial_cars_c5.yaml --config configs/aerial_cars_dc5.yaml \\
        --config configs/aerial_cars.yaml --bins aitod

Exit codes: 0 printed; 2 an invalid dataset, config or flag value (any SmalldetError) or a path
that cannot be read or written; argparse usage errors are 2 as well.
"""

from __future__ import annotations

import argparse
import logging

from detector.cli.main import check_bins, guarded
from detector.utils.files import atomic_write_json

ERROR_EXIT = 2


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog,
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--ann", required=True, help="COCO annotation JSON (usually the training set)")
    p.add_argument(
        "--config", action="append", required=True, help="YAML config; repeat to compare"
    )
    p.add_argument("--bins", default="coco", help="size-bin preset (coco, aitod, soda, ...)")
    p.add_argument(
        "--scale", type=float, default=1.0, help="resize factor the data pipeline applies"
    )
    p.add_argument("--json", default="", help="also write the results as JSON here")
    p.add_argument("opts", nargs="*", help="config overrides KEY=VALUE, applied to every config")
    return p


def run(args: argparse.Namespace) -> int:
    from detector.config import load_config
    from detector.data.validation import load_coco_json
    from detector.models import anchor_coverage, format_anchor_coverage

    check_bins(args.bins)
    logging.basicConfig(level=logging.ERROR)
    data, _ = load_coco_json(args.ann)
    results = []
    for path in args.config:
        cfg = load_config(path, args.opts)
        results.append(anchor_coverage(cfg, data, bins=args.bins, scale=args.scale))
        print(format_anchor_coverage(results[-1], title=f"== {path}"), end="\n\n")
    if args.json:
        atomic_write_json(dict(zip(args.config, results)), args.json)
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.scale <= 0:
        parser.error("--scale must be positive")
    return guarded(lambda: run(args), ERROR_EXIT)
