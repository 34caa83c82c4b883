#!/usr/bin/env python
"""Record a finished demo run as the README's reference (docs/demo_reference.json) and rewrite
the README's demo table from it. It trains the first 10 iterations once more (about 30 s), on
the machine and at the thread count of the run. Run it after a fresh-clone, idle-machine `make demo`:

    /usr/bin/time -f %e make demo            # note the seconds it prints last
    .venv/bin/python docs/update_demo_reference.py runs/demo --seconds 540

tests/test_demo_reference.py then holds the README, the config and the code to the record.
"""

import argparse
import sys
from pathlib import Path

from detector.engine.reference import (
    add_first_losses,
    first_losses,
    make_reference,
    write_reference,
)

ROOT = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a finished, uninterrupted run of the config")
    p.add_argument("--seconds", type=float, required=True, help="wall-clock of `make demo`")
    p.add_argument("--config", default="configs/demo.yaml")
    p.add_argument("--output", default=str(ROOT / "docs" / "demo_reference.json"))
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    args = p.parse_args()
    ref = make_reference(args.run_dir, args.config, args.seconds)
    # the first iterations once more, logged one by one, for the drift test (same threads)
    ref = add_first_losses(ref, first_losses(args.config, ref["threads"]))
    write_reference(ref, args.output, args.readme)
    print(f"wrote {args.output} and the demo table of {args.readme}")
    sys.exit(0)
