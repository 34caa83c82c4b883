#!/usr/bin/env python
"""``smalldet convert`` as a script, for scripts and docs that call tools/convert.py.

Same flags, output and exit codes (see detector/cli/convert.py). Needs the package installed
(``pip install -e .``), as the console command does.
"""

import sys

from detector.cli.convert import main

if __name__ == "__main__":
    sys.exit(main())
