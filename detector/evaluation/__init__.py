"""Size-stratified COCO evaluation: exact pycocotools numbers, fast, per size bin.

Main entry points: :func:`evaluate` (-> :class:`EvalReport`), :func:`paired_bootstrap`
(:mod:`.bootstrap`), :func:`detector.evaluation.tensorboard.log_report`.
"""

from detector.utils.bins import PRESETS, SizeBin, assign_bin, bins_from_edges, get_bins, parse_edges

from .api import evaluate, parse_max_dets
from .bootstrap import bootstrap_runs, paired_bootstrap
from .coco_io import EvalInputError
from .report import EvalReport

__all__ = [
    "PRESETS",
    "EvalInputError",
    "EvalReport",
    "SizeBin",
    "assign_bin",
    "bootstrap_runs",
    "paired_bootstrap",
    "bins_from_edges",
    "evaluate",
    "get_bins",
    "parse_edges",
    "parse_max_dets",
]
