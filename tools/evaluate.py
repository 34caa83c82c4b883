#!/usr/bin/env python
"""``smalldet evaluate`` as a script, for scripts and docs that call tools/evaluate.py.

Same flags, output and exit codes (see detector/cli/evaluate.py). Needs the package installed
(``pip install -e .``), as the console command does.
"""

import sys

from detector.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
