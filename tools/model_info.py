#!/usr/bin/env python
"""``smalldet info`` as a script, for scripts and docs that call tools/model_info.py.

Same flags, output and exit codes (see detector/cli/info.py). Needs the package installed
(``pip install -e .``), as the console command does.
"""

import sys

from detector.cli.info import main

if __name__ == "__main__":
    sys.exit(main())
