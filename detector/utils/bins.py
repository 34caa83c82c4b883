"""Object-size bins: the one place where size presets are defined.

Sizes are in pixels of ``sqrt(area)``; a bin ``[lo, hi]`` covers GT areas in the closed
interval ``[lo**2, hi**2]``, exactly as pycocotools' ``areaRng`` does. The first bin of every
preset is ``all`` so that the overall metrics come out of the same arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .suggest import suggest

INF = math.inf
# pycocotools uses 1e5**2 as "infinity"; we keep the same number so areaRng matches exactly.
COCO_INF_SIDE = 1e5


def fmt_px(v: float) -> str:
    """A bin edge as tables print it: ``16``, ``0.5``, ``inf``."""
    return "inf" if math.isinf(v) else f"{v:g}"


@dataclass(frozen=True)
class SizeBin:
    """A named size range, in pixels of sqrt(area)."""

    name: str
    lo: float
    hi: float

    @property
    def area_range(self) -> list[float]:
        """The closed area interval ``[lo**2, hi**2]`` used by the matcher."""
        hi = COCO_INF_SIDE if math.isinf(self.hi) else self.hi
        return [float(self.lo) ** 2, float(hi) ** 2]

    def contains_area(self, area: float) -> bool:
        lo, hi = self.area_range
        return lo <= area <= hi


ALL = SizeBin("all", 0.0, INF)

# Each preset lists its bins (after "all") and the source of its edges.
PRESETS: dict[str, tuple[list[SizeBin], str]] = {
    "coco": (
        [SizeBin("small", 0, 32), SizeBin("medium", 32, 96), SizeBin("large", 96, INF)],
        "COCO detection eval (pycocotools areaRng): 32^2 and 96^2 px area.",
    ),
    "aitod": (
        [
            SizeBin("verytiny", 2, 8),
            SizeBin("tiny", 8, 16),
            SizeBin("small", 16, 32),
            SizeBin("medium", 32, 64),
            SizeBin("large", 64, INF),
        ],
        "AI-TOD (Wang et al., ICPR 2020 / ISPRS 2021) and its cocoapi-aitod fork: "
        "very tiny 2-8, tiny 8-16, small 16-32, medium 32-64 px (areaRng [2^2, 8^2] ...), "
        "plus large 64-inf; boxes under 2 px count only in 'all'.",
    ),
    "soda": (
        [
            SizeBin("extremely_small", 0, 12),
            SizeBin("relatively_small", 12, 20),
            SizeBin("generally_small", 20, 32),
            SizeBin("normal", 32, math.sqrt(2000)),
        ],
        "SODA-D/SODA-A (Cheng et al., TPAMI 2023): area (0,144], (144,400], (400,1024], "
        "(1024,2000].",
    ),
    "tinyperson": (
        [
            SizeBin("tiny", 2, 20),
            SizeBin("tiny1", 2, 8),
            SizeBin("tiny2", 8, 12),
            SizeBin("tiny3", 12, 20),
            SizeBin("small", 20, 32),
        ],
        "TinyPerson (Yu et al., WACV 2020): tiny [2,20] split into [2,8], [8,12], [12,20]; "
        "small [20,32] px. 'tiny' overlaps tiny1-3 by design.",
    ),
}


# ------------------------------------------------------------------------- scoring presets
# The test-time model settings that bound how many objects one image can yield, and what each
# one caps. pre_nms_top_n_test counts per feature map, so it caps an image only on the
# single-map variants (c5/dc5/dc4); on fpn each of the five levels gets that many.
RECALL_CAPS: dict[str, str] = {
    "model.rpn.pre_nms_top_n_test": "RPN boxes kept before NMS per image",
    "model.rpn.post_nms_top_n_test": "proposals per image",
    "model.roi.detections_per_img": "detections per image",
}


def recall_cap_keys(variant: str) -> tuple[str, ...]:
    """The :data:`RECALL_CAPS` keys that cap one image of a model of this variant."""
    keys = tuple(RECALL_CAPS)
    return keys[1:] if variant == "fpn" else keys


# AI-TOD's own Faster R-CNN (mmdet-aitod) keeps 3000 RPN boxes before and after NMS.
_DENSE_CAPS = (
    ("model.rpn.pre_nms_top_n_test", 3000),
    ("model.rpn.post_nms_top_n_test", 3000),
    ("model.roi.detections_per_img", 1500),
)


@dataclass(frozen=True)
class EvalPreset:
    """A scoring protocol: size bins, IoU thresholds and maxDets, plus the model caps it needs.

    A preset travels as one name so that a dataset's protocol cannot be half applied: AI-TOD's
    maxDets 1500 mean nothing if the model still stops at 100 detections per image.
    """

    name: str
    bins: str  # a key of PRESETS
    max_dets: tuple[int, ...]
    iou_thrs: tuple[float, ...] | None  # None: COCO's 0.50:0.05:0.95 (linspace, as pycocotools)
    model_caps: tuple[tuple[str, int], ...]  # config key -> at least this value
    source: str


EVAL_PRESETS: dict[str, EvalPreset] = {
    "coco": EvalPreset(
        "coco", "coco", (1, 10, 100), None, (), "pycocotools' defaults (COCO detection)."
    ),
    "aitod": EvalPreset(
        "aitod",
        "aitod",
        (1, 100, 1500),
        None,
        _DENSE_CAPS,
        "AI-TOD's aitodpycocotools: maxDets [1, 100, 1500], COCO IoU thresholds; model caps "
        "of mmdet-aitod (3000 proposals).",
    ),
    "tinyperson": EvalPreset(
        "tinyperson",
        "tinyperson",
        (1, 10, 200),
        (0.25, 0.5, 0.75),
        (("model.roi.detections_per_img", 200),),
        "TinyPerson's TinyBenchmark: IoU 0.25, 0.5, 0.75 and maxDets 200.",
    ),
    "soda": EvalPreset(
        "soda",
        "soda",
        (1, 10, 100),
        None,
        (),
        "SODA's size bins with COCO's IoU thresholds and maxDets.",
    ),
    "dense": EvalPreset(
        "dense",
        "coco",
        (1, 100, 1500),
        None,
        _DENSE_CAPS,
        "COCO bins with AI-TOD's maxDets and model caps, for any dense set (DOTA, VisDrone).",
    ),
}


def get_eval_preset(name: str) -> EvalPreset:
    """The scoring preset called ``name`` (case-insensitive); ValueError naming the valid ones."""
    key = str(name).strip().lower()
    if key not in EVAL_PRESETS:
        hint = suggest(key, EVAL_PRESETS, "valid presets")
        if hint.startswith("; did you mean"):
            hint += f" (valid: {', '.join(EVAL_PRESETS)})"
        raise ValueError(f"unknown evaluation preset {name!r}{hint}")
    return EVAL_PRESETS[key]


def parse_edges(text: str) -> list[float]:
    """Parse ``"0,8,16,32,96,inf"`` into a checked list of edges."""
    try:
        edges = [float(tok) for tok in text.split(",") if tok.strip()]
    except ValueError as err:
        raise ValueError(
            f"size bins {text!r}: every edge must be a number or 'inf' "
            f"(for example '0,8,16,32,96,inf'): {err}"
        ) from None
    return check_edges(edges)


def check_edges(edges: list[float]) -> list[float]:
    """Edges must give at least one bin, be strictly increasing and non-negative."""
    if len(edges) < 2:
        raise ValueError(
            f"size bins {edges}: need at least two edges to make one bin, e.g. '0,32,inf'"
        )
    if any(math.isnan(e) for e in edges):
        raise ValueError(f"size bins {edges}: NaN is not a valid edge")
    if any(e < 0 for e in edges):
        raise ValueError(
            f"size bins {edges}: edges are object sizes in pixels and cannot be negative"
        )
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"size bins {edges}: edges must be strictly increasing")
    return edges


def bins_from_edges(edges: list[float]) -> list[SizeBin]:
    """Contiguous custom bins named by their edges, e.g. ``8-16`` or ``96-inf``."""
    edges = check_edges(list(edges))

    def fmt(v: float) -> str:
        return "inf" if math.isinf(v) else f"{v:g}"

    return [SizeBin(f"{fmt(a)}-{fmt(b)}", a, b) for a, b in zip(edges, edges[1:])]


def get_bins(spec: str | list[float] | None = "coco") -> list[SizeBin]:
    """Resolve a preset name, an edge string or an edge list into bins, ``all`` first."""
    if spec is None:
        spec = "coco"
    if isinstance(spec, str):
        key = spec.strip().lower()
        if key in PRESETS:
            return [ALL, *PRESETS[key][0]]
        if "," in key:
            return [ALL, *bins_from_edges(parse_edges(key))]
        raise ValueError(
            f"unknown size-bin preset {spec!r}: use one of {sorted(PRESETS)} "
            "or comma-separated edges such as '0,8,16,32,96,inf'"
        )
    return [ALL, *bins_from_edges([float(e) for e in spec])]


def assign_bin(area: float, bins: list[SizeBin]) -> str | None:
    """The first non-``all`` bin holding ``area`` (for colouring and statistics)."""
    for b in bins:
        if b.name != "all" and b.contains_area(area):
            return b.name
    return None
