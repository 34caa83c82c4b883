#!/usr/bin/env python
"""``smalldet train`` as a script, for scripts and docs that call tools/train.py.

Same flags, output and exit codes (see detector/cli/train.py). Needs the package installed
(``pip install -e .``), as the console command does.
"""

import sys

from detector.cli.train import main

if __name__ == "__main__":
    sys.exit(main())
