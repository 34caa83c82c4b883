#!/usr/bin/env python
"""``smalldet predict`` as a script, for scripts and docs that call tools/predict.py.

Same flags, output and exit codes (see detector/cli/predict.py). Needs the package installed
(``pip install -e .``), as the console command does.
"""

import sys

from detector.cli.predict import main

if __name__ == "__main__":
    sys.exit(main())
