"""Statistics of a COCO detection dataset: objects per size bin and class, objects per image.

    python tools/dataset_stats.py --ann train.json [--images DIR] [--bins coco|aitod|0,8,16,inf]
        [--max-dets 100] [--plot size_histogram.png] [--json stats.json] [--check]

Size bins are the evaluation's presets (detector/evaluation/bins.py). Objects are binned by
their ``area`` field, as the evaluation does; ``--bad-area recompute`` bins by w*h instead
when the file's areas disagree with the boxes.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.data import DatasetError  # noqa: E402
from detector.data.stats import dataset_stats, format_stats, plot_size_histogram  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ann", required=True, help="COCO annotation JSON")
    p.add_argument("--images", default=None, help="image root: check that every file exists")
    p.add_argument(
        "--check", action="store_true", help="with --images: open and decode every image"
    )
    p.add_argument(
        "--bins", default="coco", help="size-bin preset (coco, aitod, soda, tinyperson) or edges"
    )
    p.add_argument("--max-dets", type=int, default=100, help="the evaluation's largest maxDets")
    p.add_argument("--bad-area", default="warn", choices=["warn", "recompute", "error"])
    p.add_argument("--plot", default="size_histogram.png", help="histogram PNG ('' = none)")
    p.add_argument("--json", default="", help="also write the statistics as JSON here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)  # warnings are printed in the report below
    try:
        stats = dataset_stats(
            args.ann,
            images=args.images,
            bins=args.bins,
            max_dets=args.max_dets,
            bad_area=args.bad_area,
            check=args.check,
        )
    except (DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(format_stats(stats, title=f"{args.ann} (bins: {args.bins})"))
    if args.plot:
        out = plot_size_histogram(stats, args.plot, title=Path(args.ann).name)
        print(f"size histogram: {out}")
    if args.json:
        Path(args.json).write_text(
            json.dumps({k: v for k, v in stats.items() if not k.startswith("_")}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
