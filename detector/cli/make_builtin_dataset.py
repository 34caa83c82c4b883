"""``smalldet make-builtin-dataset``: generate (or find in the cache) the built-in synthetic
dataset and print its statistics (``tools/make_builtin_dataset.py`` is the same command).

    smalldet make-builtin-dataset [--config CFG] [data.builtin.num_train=1000 ...]

The dataset goes to ``data.builtin.cache_dir/builtin-<hash of its parameters>``; training and
evaluation with ``data.source=builtin`` find it there (and generate it themselves if absent).

Exit codes: 0 ready; 2 a config or flag error (any SmalldetError) or a cache folder that cannot
be written; argparse usage errors are 2 as well.
"""

from __future__ import annotations

import argparse
import time

from detector.cli.main import check_bins, guarded

ERROR_EXIT = 2


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="YAML config (default: the defaults)")
    p.add_argument("--bins", default="aitod", help="size bins for the printed statistics")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    return p


def run(args: argparse.Namespace) -> int:
    from detector.config.loader import load_config
    from detector.data import builtin_paths
    from detector.data.stats import dataset_stats, format_stats

    check_bins(args.bins)
    cfg = load_config(args.config, args.overrides)
    t0 = time.perf_counter()
    paths = builtin_paths(cfg)
    print(f"built-in dataset ready in {time.perf_counter() - t0:.1f}s")
    for key, value in paths.items():
        print(f"  {key}: {value}")
    for split in ("train", "val"):
        stats = dataset_stats(
            paths[f"{split}_ann"], bins=args.bins, max_dets=max(cfg.eval.max_dets)
        )
        print()
        print(format_stats(stats, title=f"{split} (bins: {args.bins})"))
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    return guarded(lambda: run(args), ERROR_EXIT)
