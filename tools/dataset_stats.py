#!/usr/bin/env python
"""``smalldet dataset-stats`` as a script, for scripts and docs that call tools/dataset_stats.py.

Same flags, output and exit codes (see detector/cli/dataset_stats.py). Needs the package installed
(``pip install -e .``), as the console command does.
"""

import sys

from detector.cli.dataset_stats import main

if __name__ == "__main__":
    sys.exit(main())
