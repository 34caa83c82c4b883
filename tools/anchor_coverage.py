#!/usr/bin/env python
"""``smalldet anchor-coverage`` as a script, for scripts and docs that call tools/anchor_coverage.py.

Same flags, output and exit codes (see detector/cli/anchor_coverage.py). Needs the package installed
(``pip install -e .``), as the console command does.
"""

import sys

from detector.cli.anchor_coverage import main

if __name__ == "__main__":
    sys.exit(main())
