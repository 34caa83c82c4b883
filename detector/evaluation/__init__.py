"""Size-stratified COCO evaluation: exact pycocotools numbers, fast, per size bin.

Main entry points: :func:`evaluate` (-> :class:`EvalReport`), :func:`paired_bootstrap`
(:mod:`.bootstrap`), :func:`detector.evaluation.tensorboard.log_report`.
"""

from detector.utils.bins import (
    EVAL_PRESETS,
    PRESETS,
    SizeBin,
    assign_bin,
    bins_from_edges,
    get_bins,
    get_eval_preset,
    parse_edges,
)

from .api import evaluate, parse_max_dets
from .bootstrap import bootstrap_runs, paired_bootstrap
from .capacity import eval_settings, model_caps
from .coco_io import EvalInputError
from .report import EvalReport

__all__ = [
    "EVAL_PRESETS",
    "PRESETS",
    "EvalInputError",
    "EvalReport",
    "SizeBin",
    "assign_bin",
    "bootstrap_runs",
    "paired_bootstrap",
    "bins_from_edges",
    "eval_settings",
    "evaluate",
    "get_bins",
    "get_eval_preset",
    "model_caps",
    "parse_edges",
    "parse_max_dets",
]
