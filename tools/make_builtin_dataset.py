#!/usr/bin/env python
"""``smalldet make-builtin-dataset`` as a script, for scripts and docs that call tools/make_builtin_dataset.py.

Same flags, output and exit codes (see detector/cli/make_builtin_dataset.py). Needs the package installed
(``pip install -e .``), as the console command does.
"""

import sys

from detector.cli.make_builtin_dataset import main

if __name__ == "__main__":
    sys.exit(main())
