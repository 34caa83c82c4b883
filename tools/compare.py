#!/usr/bin/env python
"""``smalldet compare`` as a script, for scripts and docs that call tools/compare.py.

Same flags, output and exit codes (see detector/cli/compare.py). Needs the package installed
(``pip install -e .``), as the console command does.
"""

import sys

from detector.cli.compare import main

if __name__ == "__main__":
    sys.exit(main())
