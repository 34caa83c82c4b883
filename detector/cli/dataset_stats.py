"""``smalldet dataset-stats``: statistics of a COCO detection dataset: objects per size bin and
class, objects per image (``tools/dataset_stats.py`` is the same command).

    smalldet dataset-stats --ann train.json [--images DIR] [--bins coco|aitod|0,8,16,inf]
        [--max-dets 100] [--plot size_histogram.png] [--json stats.json] [--check]

It writes only what it is asked to (``--plot``, ``--json``), where it is told: nothing lands
in the current folder by default.

Size bins are the evaluation's presets (detector/utils/bins.py). Objects are binned by their
``area`` field, as the evaluation does; ``--bad-area recompute`` bins by w*h instead when the
file's areas disagree with the boxes.

Exit codes: 0 printed; 2 an invalid dataset or flag value (any SmalldetError) or a path that
cannot be read or written; argparse usage errors are 2 as well.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from detector.cli.main import check_bins, guarded
from detector.utils.files import atomic_write_json

ERROR_EXIT = 2


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
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
    p.add_argument(
        "--plot", default="", help="write the size histogram to this PNG (default: none)"
    )
    p.add_argument("--json", default="", help="also write the statistics as JSON here")
    return p


def run(args: argparse.Namespace) -> int:
    from detector.data.stats import dataset_stats, format_stats, plot_size_histogram

    check_bins(args.bins)
    logging.basicConfig(level=logging.ERROR)  # warnings are printed in the report below
    stats = dataset_stats(
        args.ann,
        images=args.images,
        bins=args.bins,
        max_dets=args.max_dets,
        bad_area=args.bad_area,
        check=args.check,
    )
    print(format_stats(stats, title=f"{args.ann} (bins: {args.bins})"))
    if args.plot:
        out = plot_size_histogram(stats, args.plot, title=Path(args.ann).name)
        print(f"size histogram: {out}")
    if args.json:
        atomic_write_json({k: v for k, v in stats.items() if not k.startswith("_")}, args.json)
        print(f"statistics: {args.json}")
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    return guarded(lambda: run(args), ERROR_EXIT)
