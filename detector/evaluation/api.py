"""``evaluate()``: ground truth + results in, :class:`EvalReport` out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from detector.utils.bins import EvalPreset, SizeBin, get_bins, get_eval_preset

from .capacity import check_recall_caps
from .coco_io import Detections, EvalInputError, GroundTruth, load_gt, load_results
from .errors import error_analysis
from .fast_eval import accumulate, build_match_table, coco_iou_thrs, coco_rec_thrs, gt_counts
from .report import EvalReport


def parse_max_dets(spec: Any) -> tuple[int, ...]:
    """``"1,10,100"`` or a sequence -> sorted tuple of positive ints."""
    if isinstance(spec, str):
        try:
            spec = [int(tok) for tok in spec.split(",") if tok.strip()]
        except ValueError:
            raise ValueError(
                f"max dets {spec!r}: use comma-separated integers like '1,10,100'"
            ) from None
    vals = [int(v) for v in spec]
    if not vals or any(v <= 0 for v in vals):
        raise ValueError(f"max dets {spec!r}: need at least one positive integer")
    return tuple(sorted(set(vals)))


def resolve_bins(bins: Any) -> list[SizeBin]:
    """Preset name, edge string/list or SizeBin list -> bins with ``all`` first.

    Each bin carries its own name and range, so labels and ranges can never get out of step
    (a pycocotools pitfall when ``areaRng`` and ``areaRngLbl`` are edited separately).
    """
    if isinstance(bins, (list, tuple)) and bins and isinstance(bins[0], SizeBin):
        out = list(bins) if bins[0].name == "all" else [get_bins("coco")[0], *bins]
    else:
        out = get_bins(bins)
    names = [b.name for b in out]
    if len(set(names)) != len(names):
        raise ValueError(f"size bins {names}: bin names must be unique")
    for b in out:
        if b.lo < 0 or b.hi <= b.lo:
            raise ValueError(f"size bin {b}: need 0 <= lo < hi")
    return out


def resolve_scoring(
    preset: str | EvalPreset | None = None,
    bins: Any = None,
    max_dets: Any = None,
    iou_thrs: Any = None,
) -> tuple[Any, tuple[int, ...], np.ndarray]:
    """``(bins, max_dets, iou_thrs)``: what is given explicitly, else the preset's, else COCO's.

    The thresholds come back as float64, COCO's being pycocotools' own ``np.linspace`` (bit-equal
    to ``params.iouThrs``); a bad value is a ValueError naming it.
    """
    p = None
    if preset is not None and preset != "":
        p = preset if isinstance(preset, EvalPreset) else get_eval_preset(preset)
    if bins is None:
        bins = p.bins if p else "coco"
    if max_dets is None:
        max_dets = p.max_dets if p else (1, 10, 100)
    if iou_thrs is None and p is not None and p.iou_thrs is not None:
        iou_thrs = p.iou_thrs
    if iou_thrs is None:
        thrs = coco_iou_thrs()
    else:
        try:
            thrs = np.asarray(iou_thrs, np.float64)
        except (TypeError, ValueError):
            thrs = np.zeros(0)
    if thrs.ndim != 1 or not len(thrs) or (thrs <= 0).any() or (thrs > 1).any():
        raise ValueError(f"iou_thrs must be a non-empty list of values in (0, 1], got {iou_thrs!r}")
    return bins, parse_max_dets(max_dets), thrs


def prepare(gt: Any, results: Any) -> tuple[GroundTruth, Detections]:
    g = gt if isinstance(gt, GroundTruth) else load_gt(gt)
    d = results if isinstance(results, Detections) else load_results(results, g)
    return g, d


def evaluate(
    gt: Any,
    results: Any,
    bins: Any = None,
    max_dets: Any = None,
    iou_thrs: Any = None,
    backend: str = "fast",
    errors: bool = True,
    *,
    preset: str | EvalPreset | None = None,
    model_caps: Mapping[str, int] | None = None,
) -> EvalReport:
    """Size-stratified COCO bbox evaluation.

    ``gt``: path, COCO dict or ``pycocotools.coco.COCO``; ``results``: path or list of
    ``{image_id, category_id, bbox: [x, y, w, h], score}``. ``bins``: a bins preset name
    (``coco``, ``aitod``, ``soda``, ``tinyperson``), edges (``"0,8,16,32,96,inf"``) or a list of
    :class:`SizeBin`. AP is taken at the largest ``max_dets``. ``preset`` (a key of
    :data:`detector.utils.bins.EVAL_PRESETS`) supplies the bins, maxDets and IoU thresholds not
    given here; without one they are COCO's. ``model_caps`` (config key -> value, from
    :func:`.capacity.model_caps`) lets the report say when the model cannot reach the largest
    maxDets. ``backend="pycocotools"`` runs the reference implementation instead (same numbers,
    much slower).
    """
    bins, mdets, thrs = resolve_scoring(preset, bins, max_dets, iou_thrs)
    if isinstance(preset, str):
        preset = get_eval_preset(preset) if preset.strip() else None
    g, d = prepare(gt, results)
    size_bins = resolve_bins(bins)
    notes = [*g.warnings, *d.warnings]
    caps, cap_notes = check_recall_caps(g, mdets, model_caps)
    notes += cap_notes
    if len(d) == 0:
        notes.append(f"results {d.source} is empty: every score is 0")
    if backend == "fast":
        mt = build_match_table(g, d, size_bins, mdets, thrs)
        precision, recall = accumulate(mt)
        counts = gt_counts(mt)
    elif backend == "pycocotools":
        from .cocotools_backend import run_cocoeval

        precision, recall, _ = run_cocoeval(g, d, size_bins, mdets, thrs)
        mt = build_match_table(g, d, size_bins, (1,), thrs[:1])
        counts = gt_counts(mt)
    else:
        raise ValueError(f"unknown backend {backend!r}: use 'fast' or 'pycocotools'")
    err = error_analysis(g, d, size_bins, max_det=mdets[-1]) if errors else None
    return EvalReport(
        bins=size_bins,
        max_dets=mdets,
        iou_thrs=thrs,
        rec_thrs=coco_rec_thrs(),
        cat_ids=[int(c) for c in g.cat_ids],
        cat_names=list(g.cat_names),
        precision=precision,
        recall=recall,
        gt_counts=counts,
        backend=backend,
        errors=err,
        warnings=notes,
        preset=preset.name if isinstance(preset, EvalPreset) else (preset or None),
        recall_caps=caps,
    )


__all__ = [
    "EvalInputError",
    "evaluate",
    "parse_max_dets",
    "prepare",
    "resolve_bins",
    "resolve_scoring",
]
