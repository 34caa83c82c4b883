"""``evaluate()``: ground truth + results in, :class:`EvalReport` out."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from detector.utils.bins import SizeBin, get_bins

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


def prepare(gt: Any, results: Any) -> tuple[GroundTruth, Detections]:
    g = gt if isinstance(gt, GroundTruth) else load_gt(gt)
    d = results if isinstance(results, Detections) else load_results(results, g)
    return g, d


def evaluate(
    gt: Any,
    results: Any,
    bins: Any = "coco",
    max_dets: Any = (1, 10, 100),
    iou_thrs: Any = None,
    backend: str = "fast",
    errors: bool = True,
) -> EvalReport:
    """Size-stratified COCO bbox evaluation.

    ``gt``: path, COCO dict or ``pycocotools.coco.COCO``; ``results``: path or list of
    ``{image_id, category_id, bbox: [x, y, w, h], score}``. ``bins``: a preset name
    (``coco``, ``aitod``, ``soda``, ``tinyperson``), edges (``"0,8,16,32,96,inf"``) or a list of
    :class:`SizeBin`. AP is taken at the largest ``max_dets``. ``backend="pycocotools"`` runs the
    reference implementation instead (same numbers, much slower).
    """
    g, d = prepare(gt, results)
    size_bins = resolve_bins(bins)
    mdets = parse_max_dets(max_dets)
    thrs = coco_iou_thrs() if iou_thrs is None else np.asarray(iou_thrs, np.float64)
    if thrs.ndim != 1 or not len(thrs) or (thrs <= 0).any() or (thrs > 1).any():
        raise ValueError(f"iou_thrs must be a non-empty list of values in (0, 1], got {iou_thrs!r}")
    notes = [*g.warnings, *d.warnings]
    per_img = np.bincount(g.img, minlength=g.num_images) if len(g.img) else np.zeros(1, int)
    densest = int(per_img.max()) if len(per_img) else 0
    if densest > mdets[-1]:
        img_id = g.img_ids[int(per_img.argmax())].item()  # an int, or a string id
        msg = (
            f"the densest image (id {img_id}) has {densest} GT boxes but the largest maxDets is "
            f"{mdets[-1]}: recall and AP are capped; pass a larger max_dets (e.g. "
            f"'1,10,100,{max(1000, densest)}')"
        )
        warnings.warn(msg, stacklevel=2)
        notes.append(msg)
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
    )


__all__ = ["EvalInputError", "evaluate", "parse_max_dets", "prepare", "resolve_bins"]
