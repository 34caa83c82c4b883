#!/usr/bin/env python
"""Compare runs per size bin with paired image-level bootstrap 95% CIs.

tools/compare.py --gt GT.json A.json B.json [...] [--bins aitod] [--n 1000] [--json OUT]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.evaluation.cli import compare_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(compare_main())
