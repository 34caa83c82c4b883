#!/usr/bin/env python
"""``smalldet analyze-dilation`` as a script, for scripts and docs that call tools/analyze_dilation.py.

Same flags, output and exit codes (see detector/cli/analyze_dilation.py). Needs the package installed
(``pip install -e .``), as the console command does.
"""

import sys

from detector.cli.analyze_dilation import main

if __name__ == "__main__":
    sys.exit(main())
