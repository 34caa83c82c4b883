#!/usr/bin/env python
"""How well each config's anchors cover a dataset's boxes, per size bin: the best anchor IoU,
the share of boxes with an anchor above the RPN's positive threshold, and the share that only
get the RPN's fallback match. No training; it uses the model's own anchor generator.

    python tools/anchor_coverage.py --ann ../shared/data/kit_ais_aerial_cars/train.json \\
        --config configs/aerial_cars_c5.yaml --config configs/aerial_cars_dc5.yaml \\
        --config configs/aerial_cars.yaml --bins aitod
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.config import ConfigError, load_config  # noqa: E402
from detector.data import DatasetError  # noqa: E402
from detector.data.validation import load_coco_json  # noqa: E402
from detector.models import anchor_coverage, format_anchor_coverage  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
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
    args = p.parse_args(argv)
    if args.scale <= 0:
        p.error("--scale must be positive")
    logging.basicConfig(level=logging.ERROR)
    try:
        data, _ = load_coco_json(args.ann)
        results = []
        for path in args.config:
            cfg = load_config(path, args.opts)
            results.append(anchor_coverage(cfg, data, bins=args.bins, scale=args.scale))
            print(format_anchor_coverage(results[-1], title=f"== {path}"), end="\n\n")
    except (ConfigError, DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.json:
        Path(args.json).write_text(json.dumps(dict(zip(args.config, results)), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
