#!/usr/bin/env python
"""Size-stratified COCO evaluation.

tools/evaluate.py --gt GT.json --results DT.json [--bins PRESET|EDGES] [--max-dets LIST]
                  [--json OUT] [--plots DIR] [--backend fast|pycocotools] [--tensorboard DIR]
tools/evaluate.py --config CFG --checkpoint CKPT [--data IMAGES --ann ANN] [--json OUT]
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.evaluation.cli import evaluate_main  # noqa: E402

if __name__ == "__main__":
    sys.exit(evaluate_main())
