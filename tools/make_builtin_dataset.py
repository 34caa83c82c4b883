"""Generate (or find in the cache) the built-in synthetic dataset and print its statistics.

    python tools/make_builtin_dataset.py [--config CFG] [data.builtin.num_train=1000 ...]

The dataset goes to ``data.builtin.cache_dir/builtin-<hash of its parameters>``; training and
evaluation with ``data.source=builtin`` find it there (and generate it themselves if absent).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.config.loader import load_config  # noqa: E402
from detector.data import builtin_paths  # noqa: E402
from detector.data.stats import dataset_stats, format_stats  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--config", default=None, help="YAML config (default: the defaults)")
    p.add_argument("--bins", default="aitod", help="size bins for the printed statistics")
    p.add_argument("overrides", nargs="*", help="KEY=VALUE config overrides")
    args = p.parse_args(argv)
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


if __name__ == "__main__":
    sys.exit(main())
