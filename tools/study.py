#!/usr/bin/env python
"""``smalldet study`` as a script, for scripts and docs that call tools/study.py.

Same flags, output and exit codes (see detector/cli/study.py). Needs the package installed
(``pip install -e .``), as the console command does.
"""

import sys

from detector.cli.study import main

if __name__ == "__main__":
    sys.exit(main())
