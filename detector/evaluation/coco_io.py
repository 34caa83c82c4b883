"""Loading and checking a COCO ground truth and a list of bbox results.

Everything is turned into flat numpy arrays (one row per box) so that the evaluator never
touches Python dicts again. Bad input stops with a :class:`EvalInputError` that names the file,
the record, the field and the fix; recoverable gaps (a GT without ``area`` or ``iscrowd``) are
filled in with a warning, the way the COCO format defines them.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


class EvalInputError(ValueError):
    """A ground truth or results file that cannot be evaluated as given."""


@dataclass
class GroundTruth:
    """COCO ground truth as arrays. Images and categories are sorted by id, as in pycocotools."""

    source: str
    img_ids: np.ndarray  # (I,) sorted unique image ids
    cat_ids: np.ndarray  # (K,) sorted unique category ids
    cat_names: list[str]
    img: np.ndarray  # (G,) image index into img_ids
    cat: np.ndarray  # (G,) category index into cat_ids
    bbox: np.ndarray  # (G, 4) float64 xywh
    area: np.ndarray  # (G,) float64, the `area` field (used for the size ranges)
    crowd: np.ndarray  # (G,) bool
    ann_ids: np.ndarray  # (G,) int64 annotation ids (or -1 where absent)
    coco: Any = None  # a pycocotools COCO object when one was given
    dataset: dict | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def num_images(self) -> int:
        return len(self.img_ids)


@dataclass
class Detections:
    """Bbox results as arrays, in file order."""

    source: str
    img: np.ndarray  # (D,) image index
    cat: np.ndarray  # (D,) category index
    bbox: np.ndarray  # (D, 4) float64 xywh
    score: np.ndarray  # (D,) float64
    records: list[dict] | None = None

    def __len__(self) -> int:
        return len(self.score)


def _warn(msg: str, sink: list[str]) -> None:
    sink.append(msg)
    warnings.warn(msg, stacklevel=3)


def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise EvalInputError(f"{what} file {path} does not exist")
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as err:
        raise EvalInputError(f"{what} file {path} is not valid JSON: {err}") from None


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _checked_bbox(bb, where: str, hint: str):
    """``bb`` if it is 4 finite numbers with w, h >= 0; else an error naming the record."""
    if not (isinstance(bb, (list, tuple)) and len(bb) == 4 and all(_is_number(v) for v in bb)):
        raise EvalInputError(f"{where}: 'bbox' must be 4 numbers [x, y, w, h], got {bb!r}")
    if not all(math.isfinite(v) for v in bb) or bb[2] < 0 or bb[3] < 0:
        raise EvalInputError(
            f"{where}: 'bbox' {bb!r} must be finite with width and height >= 0 {hint}"
        )
    return bb


def load_gt(gt: Any) -> GroundTruth:
    """Accept a path, a COCO-format dict or a ``pycocotools.coco.COCO`` object."""
    coco = None
    if isinstance(gt, (str, Path)):
        source = str(gt)
        data = _read_json(gt, "ground-truth")
    elif isinstance(gt, dict):
        source, data = "<ground-truth dict>", gt
    elif hasattr(gt, "dataset") and hasattr(gt, "anns"):
        source, data, coco = "<pycocotools COCO>", gt.dataset, gt
    else:
        raise EvalInputError(
            f"ground truth must be a path, a COCO dict or a pycocotools COCO, got {type(gt).__name__}"
        )
    if not isinstance(data, dict):
        raise EvalInputError(f"ground-truth {source}: top level must be a JSON object")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise EvalInputError(
                f"ground-truth {source}: missing or non-list '{key}' (a COCO file needs "
                "'images', 'annotations' and 'categories' lists)"
            )
    notes: list[str] = []
    try:
        img_ids = np.array(sorted({im["id"] for im in data["images"]}), dtype=np.int64)
    except (KeyError, TypeError):
        bad = next(
            i for i, im in enumerate(data["images"]) if not isinstance(im, dict) or "id" not in im
        )
        raise EvalInputError(f"ground-truth {source}: images[{bad}] has no 'id'") from None
    cats = data["categories"]
    try:
        cat_map = {c["id"]: str(c.get("name", c["id"])) for c in cats}
    except (KeyError, TypeError, AttributeError):
        bad = next(i for i, c in enumerate(cats) if not isinstance(c, dict) or "id" not in c)
        raise EvalInputError(f"ground-truth {source}: categories[{bad}] has no 'id'") from None
    cat_ids = np.array(sorted(cat_map), dtype=np.int64)
    cat_names = [cat_map[int(c)] for c in cat_ids]

    anns = data["annotations"]
    n = len(anns)
    img_raw = np.empty(n, np.int64)
    cat_raw = np.empty(n, np.int64)
    bbox = np.empty((n, 4), np.float64)
    area = np.empty(n, np.float64)
    crowd = np.zeros(n, bool)
    ann_ids = np.full(n, -1, np.int64)
    missing_area = missing_crowd = 0
    for i, a in enumerate(anns):
        where = f"ground-truth {source}: annotations[{i}]"
        if not isinstance(a, dict):
            raise EvalInputError(f"{where} is not an object")
        if "id" in a:
            ann_ids[i] = a["id"]
        where += f" (id {a.get('id', '?')})"
        for key in ("image_id", "category_id", "bbox"):
            if key not in a:
                raise EvalInputError(f"{where} has no '{key}'")
        img_raw[i] = a["image_id"]
        cat_raw[i] = a["category_id"]
        bb = _checked_bbox(a["bbox"], where, "(xywh format)")
        bbox[i] = bb
        if "area" in a:
            if not _is_number(a["area"]) or not math.isfinite(a["area"]) or a["area"] < 0:
                raise EvalInputError(
                    f"{where}: 'area' must be a finite number >= 0, got {a['area']!r}"
                )
            area[i] = a["area"]
        else:
            area[i] = bb[2] * bb[3]
            missing_area += 1
        if "iscrowd" in a:
            crowd[i] = bool(a["iscrowd"])
        else:
            missing_crowd += 1
    if missing_area:
        _warn(
            f"ground-truth {source}: {missing_area} annotations have no 'area'; using w*h of the "
            "bbox (pycocotools would raise KeyError: add 'area' to silence this)",
            notes,
        )
    if missing_crowd:
        _warn(
            f"ground-truth {source}: {missing_crowd} annotations have no 'iscrowd'; treating them "
            "as iscrowd=0 (pycocotools would raise KeyError: add 'iscrowd' to silence this)",
            notes,
        )
    img = np.searchsorted(img_ids, img_raw)
    cat = np.searchsorted(cat_ids, cat_raw)
    known = (img < len(img_ids)) & (img_ids[np.minimum(img, len(img_ids) - 1)] == img_raw)
    known &= (cat < len(cat_ids)) & (cat_ids[np.minimum(cat, max(len(cat_ids) - 1, 0))] == cat_raw)
    if n and not known.all():
        _warn(
            f"ground-truth {source}: {int((~known).sum())} annotations reference an image or "
            "category not listed in 'images'/'categories'; they are left out, as pycocotools does",
            notes,
        )
    if n:
        ids = ann_ids[ann_ids >= 0]
        if len(np.unique(ids)) != len(ids):
            _warn(f"ground-truth {source}: annotation ids are not unique", notes)
        if (ann_ids == 0).any():
            _warn(
                f"ground-truth {source}: an annotation has id 0; pycocotools counts detections "
                "matched to GT id 0 as false positives (its dtMatches uses 0 for 'unmatched'), "
                "this evaluator does not, so numbers can differ from pycocotools: renumber ids from 1",
                notes,
            )
    keep = known
    return GroundTruth(
        source=source,
        img_ids=img_ids,
        cat_ids=cat_ids,
        cat_names=cat_names,
        img=img[keep].astype(np.int64),
        cat=cat[keep].astype(np.int64),
        bbox=bbox[keep],
        area=area[keep],
        crowd=crowd[keep],
        ann_ids=ann_ids[keep],
        coco=coco,
        dataset=data,
        warnings=notes,
    )


def _diagnose_result(records: list, gt: GroundTruth, source: str) -> None:
    """Slow pass that finds the first bad record and raises a precise error."""
    img_set = set(gt.img_ids.tolist())
    cat_set = set(gt.cat_ids.tolist())
    for i, r in enumerate(records):
        where = f"results {source}: record [{i}]"
        if not isinstance(r, dict):
            raise EvalInputError(f"{where} is not an object but {type(r).__name__}")
        for key in ("image_id", "category_id", "bbox", "score"):
            if key not in r:
                raise EvalInputError(
                    f"{where} has no '{key}' (each result needs image_id, category_id, "
                    "bbox [x, y, w, h] and score)"
                )
        if r["image_id"] not in img_set:
            raise EvalInputError(
                f"{where}: image_id {r['image_id']!r} is not in the ground truth "
                f"{gt.source} (results must use the GT's own image ids)"
            )
        if r["category_id"] not in cat_set:
            raise EvalInputError(
                f"{where}: category_id {r['category_id']!r} is not a category of the ground truth "
                f"{gt.source} (known ids: {sorted(cat_set)[:20]}; map model labels to dataset ids)"
            )
        s = r["score"]
        if not _is_number(s) or not math.isfinite(s) or s < 0:
            raise EvalInputError(
                f"{where} (image_id {r['image_id']}): score {s!r} must be a finite number >= 0"
            )
        _checked_bbox(r["bbox"], where, "(COCO results use [x, y, w, h], not [x1, y1, x2, y2])")
    raise EvalInputError(f"results {source}: malformed records")  # pragma: no cover


def load_results(results: Any, gt: GroundTruth) -> Detections:
    """Accept a path or a list of ``{image_id, category_id, bbox, score}`` dicts."""
    if isinstance(results, (str, Path)):
        source = str(results)
        records = _read_json(results, "results")
    else:
        source, records = "<results list>", results
    if isinstance(records, dict) and "annotations" in records:
        raise EvalInputError(
            f"results {source}: is a COCO dataset object, not a results list; pass the list of "
            "detections (or its 'annotations' list)"
        )
    if not isinstance(records, (list, tuple)):
        raise EvalInputError(
            f"results {source}: must be a JSON list of detections, got {type(records).__name__}"
        )
    n = len(records)
    if n == 0:
        return Detections(
            source, np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros((0, 4)), np.zeros(0)
        )
    try:
        img_raw = np.fromiter((r["image_id"] for r in records), np.int64, n)
        cat_raw = np.fromiter((r["category_id"] for r in records), np.int64, n)
        score = np.fromiter((r["score"] for r in records), np.float64, n)
        bbox = np.array([r["bbox"] for r in records], dtype=np.float64)
    except (KeyError, TypeError, ValueError):
        _diagnose_result(records, gt, source)
        raise  # pragma: no cover
    if bbox.shape != (n, 4):
        _diagnose_result(records, gt, source)
    img = np.searchsorted(gt.img_ids, img_raw)
    cat = np.searchsorted(gt.cat_ids, cat_raw)
    ok = (img < len(gt.img_ids)) & (gt.img_ids[np.minimum(img, len(gt.img_ids) - 1)] == img_raw)
    if len(gt.cat_ids):
        ok &= (cat < len(gt.cat_ids)) & (
            gt.cat_ids[np.minimum(cat, len(gt.cat_ids) - 1)] == cat_raw
        )
    else:
        ok[:] = False
    ok &= np.isfinite(score) & (score >= 0)
    ok &= np.isfinite(bbox).all(1) & (bbox[:, 2] >= 0) & (bbox[:, 3] >= 0)
    if not ok.all():
        bad = int(np.flatnonzero(~ok)[0])
        try:
            _diagnose_result([records[bad]], gt, source)
        except EvalInputError as err:
            raise EvalInputError(str(err).replace("record [0]", f"record [{bad}]")) from None
    return Detections(source, img.astype(np.int64), cat.astype(np.int64), bbox, score, records)


def select_categories(gt: Any, categories) -> tuple[dict, set]:
    """The ground truth (path or COCO dict) reduced to ``categories`` (names or ids), the way
    pycocotools' ``params.catIds`` does: every image stays (so missed objects and false
    positives on them still count), the other categories' boxes go. Returns the reduced dict
    and the kept category ids (for :func:`keep_categories` on the results)."""
    source = str(gt) if isinstance(gt, (str, Path)) else "<ground truth>"
    data = _read_json(gt, "ground truth") if isinstance(gt, (str, Path)) else gt
    if not isinstance(data, dict) or not isinstance(data.get("categories"), list):
        raise EvalInputError(f"{source}: no 'categories' list, so categories cannot be selected")
    by_name = {str(c.get("name")): c["id"] for c in data["categories"] if "id" in c}
    ids = set(by_name.values())
    keep = set()
    for c in categories:
        key = str(c).strip()
        if key in by_name:
            keep.add(by_name[key])
        elif key.lstrip("-").isdigit() and int(key) in ids:
            keep.add(int(key))
        else:
            raise EvalInputError(
                f"{source}: unknown category {key!r}. Fix: use a name or id from its "
                f"'categories': {', '.join(f'{n} ({i})' for n, i in by_name.items())}"
            )
    if not keep:
        raise EvalInputError(
            "no categories selected. Fix: name at least one, e.g. --categories car"
        )
    out = dict(data)
    out["categories"] = [c for c in data["categories"] if c.get("id") in keep]
    out["annotations"] = [a for a in data.get("annotations", []) if a.get("category_id") in keep]
    return out, keep


def keep_categories(results: Any, keep: set) -> list:
    """The detections (path or list) whose ``category_id`` is in ``keep``."""
    dets = _read_json(results, "results") if isinstance(results, (str, Path)) else results
    if not isinstance(dets, list):
        raise EvalInputError(f"{results}: results must be a list of detections")
    return [d for d in dets if isinstance(d, dict) and d.get("category_id") in keep]


def restrict_categories(gt: Any, results: Any, categories) -> tuple[dict, list]:
    """:func:`select_categories` on ``gt`` and :func:`keep_categories` on ``results``:
    ``(gt_dict, results_list)`` holding only ``categories`` (names or ids)."""
    sub_gt, keep = select_categories(gt, categories)
    return sub_gt, keep_categories(results, keep)
