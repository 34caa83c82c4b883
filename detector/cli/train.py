"""``smalldet train``: train a detector (``tools/train.py`` is the same command).

    smalldet train --config configs/demo.yaml [--output DIR] [--resume] [--overwrite] [KEY=VALUE ...]
    torchrun --nproc_per_node=N tools/train.py --config CFG ...   # DDP (see docs/distributed.md)

Exit codes: 0 done; 1 config/data/checkpoint error (any SmalldetError, or a path that cannot be
read or written); 2 non-finite loss (nothing saved from that state); 130 / 143 stopped by
SIGINT / SIGTERM after writing a checkpoint.
"""

from __future__ import annotations

import argparse
import sys

from detector.cli.main import guarded

ERROR_EXIT = 1
NONFINITE_EXIT = 2


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog, description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    p.add_argument("--config", required=True, help="YAML config (may use _base_)")
    p.add_argument(
        "--output", default=None, help="run directory (default: the config's output_dir)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh where another run is (its files move to DIR/.overwritten-<time>/)",
    )
    p.add_argument("overrides", nargs="*", help="dotted KEY=VALUE overrides, e.g. solver.lr=0.01")
    return p


def run(args: argparse.Namespace) -> int:
    # lazy: torch and the engine load only once the flags are known to be fine
    from detector.config import load_config
    from detector.engine.distributed import cleanup_distributed
    from detector.engine.trainer import NonFiniteLossError, TrainingInterrupted, train

    try:
        cfg = load_config(args.config, args.overrides)
        if args.output:
            cfg.output_dir = args.output
        train(cfg, cfg.output_dir, resume=args.resume, overwrite=args.overwrite)
    except NonFiniteLossError as err:
        print(f"error: non-finite loss: {err}", file=sys.stderr)
        return NONFINITE_EXIT
    except TrainingInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 128 + int(err.signum)
    finally:
        cleanup_distributed()
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    return guarded(lambda: run(args), ERROR_EXIT)
