#!/usr/bin/env python
"""Train a detector.

    python tools/train.py --config configs/demo.yaml [--output DIR] [--resume] [KEY=VALUE ...]
    torchrun --nproc_per_node=N tools/train.py --config CFG ...   # DDP (see docs/distributed.md)

Exit codes: 0 done; 1 config/data/checkpoint error; 2 non-finite loss (nothing saved from that
state); 130 / 143 stopped by SIGINT / SIGTERM after writing a checkpoint.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.config import ConfigError, load_config  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--config", required=True, help="YAML config (may use _base_)")
    p.add_argument(
        "--output", default=None, help="run directory (default: the config's output_dir)"
    )
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint")
    p.add_argument("overrides", nargs="*", help="dotted KEY=VALUE overrides, e.g. solver.lr=0.01")
    args = p.parse_args(argv)

    from detector.data import DatasetError
    from detector.engine.checkpoint import CheckpointError
    from detector.engine.distributed import cleanup_distributed
    from detector.engine.trainer import NonFiniteLossError, TrainingInterrupted, train

    try:
        cfg = load_config(args.config, args.overrides)
        if args.output:
            cfg.output_dir = args.output
        train(cfg, cfg.output_dir, resume=args.resume)
    except (ConfigError, CheckpointError, DatasetError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except NonFiniteLossError as err:
        print(f"error: non-finite loss: {err}", file=sys.stderr)
        return 2
    except TrainingInterrupted as err:
        print(f"stopped: {err}", file=sys.stderr)
        return 128 + int(err.signum)
    finally:
        cleanup_distributed()
    return 0


if __name__ == "__main__":
    sys.exit(main())
