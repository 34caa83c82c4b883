"""Loading and checking a COCO ground truth and a list of bbox results.

Everything is turned into flat numpy arrays (one row per box) so that the evaluator never
touches Python dicts again. Bad input stops with a :class:`EvalInputError` that names the file,
the record, the field and the fix; recoverable gaps (a GT without ``area`` or ``iscrowd``) are
filled in with a warning, the way the COCO format defines them.
"""

from __future__ import annotations

import itertools
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from detector.utils.errors import SmalldetError
from detector.utils.files import read_json


class EvalInputError(SmalldetError, ValueError):
    """A ground truth or results file that cannot be evaluated as given."""


@dataclass
class GroundTruth:
    """COCO ground truth as arrays. Images and categories are sorted by id, as in pycocotools."""

    source: str
    img_ids: np.ndarray  # (I,) sorted unique image ids: int64, or str when the GT uses strings
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

    @property
    def string_ids(self) -> bool:
        """The image ids are strings (``"img_001"``), not integers."""
        return self.img_ids.dtype.kind == "U"


@dataclass
class Detections:
    """Bbox results as arrays, in file order."""

    source: str
    img: np.ndarray  # (D,) image index
    cat: np.ndarray  # (D,) category index
    bbox: np.ndarray  # (D, 4) float64 xywh
    score: np.ndarray  # (D,) float64
    records: list[dict] | None = None
    warnings: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.score)


def _warn(msg: str, sink: list[str]) -> None:
    sink.append(msg)
    warnings.warn(msg, stacklevel=3)


def _read_json(path: str | Path, what: str) -> Any:
    return read_json(path, what=f"{what} file", error=EvalInputError)


_INT = (int, np.integer)
_FLOAT = (float, np.floating)
_BOOL = (bool, np.bool_)
_INT64 = (-(2**63), 2**63)


def _is_number(v: Any) -> bool:
    return isinstance(v, (*_INT, *_FLOAT)) and not isinstance(v, _BOOL)


def _is_int_type(t: type) -> bool:
    return issubclass(t, _INT) and not issubclass(t, _BOOL)


def _is_number_type(t: type) -> bool:
    return issubclass(t, (*_INT, *_FLOAT)) and not issubclass(t, _BOOL)


def _id_problem(v: Any, strings: bool = False) -> str | None:
    """Why ``v`` cannot be an id, or None when it can.

    Ids are integers; a float with a whole value (``3.0``, as some JSON writers emit) is read as
    that integer, which is what pycocotools' dict lookups do too. Image ids may instead all be
    strings (``strings=True``), as pycocotools allows; then every image id must be one. Booleans,
    fractional floats and (for integer ids) strings are refused: ``"3"`` or ``True`` is
    almost always a bug upstream, and silently casting them would hide it.
    """
    if strings:
        if isinstance(v, str):
            return None
        return f"{v!r} is not a string, but the ground truth's image ids are strings"
    if isinstance(v, _BOOL):
        return f"{v!r} is a boolean, not an integer id"
    if isinstance(v, str):
        if v.strip().lstrip("+-").isdigit():
            return f"{v!r} is a string; write the number without quotes"
        return f"{v!r} is a string, but the ground truth's ids are integers"
    if isinstance(v, _FLOAT):
        if not math.isfinite(v) or not float(v).is_integer():
            return f"{v!r} is not a whole number (ids are integers)"
        v = int(v)
    if not isinstance(v, _INT):
        return f"{v!r} ({type(v).__name__}) is not an integer id"
    if not _INT64[0] <= int(v) < _INT64[1]:
        return f"{v!r} is outside the 64-bit integer range"
    return None


def _as_id(v: Any) -> int | str:
    """An id that passed :func:`_id_problem`, as the evaluator keys it."""
    return v if isinstance(v, str) else int(v)


def _number_problem(v: Any) -> str | None:
    if isinstance(v, _BOOL):
        return f"{v!r} is a boolean, not a number"
    if isinstance(v, str):
        return f"{v!r} is a string; write the number without quotes"
    if not _is_number(v):
        return f"{v!r} ({type(v).__name__}) is not a number"
    return None


def _checked_bbox(bb, where: str, hint: str):
    """``bb`` if it is 4 finite numbers with w, h >= 0; else an error naming the record."""
    if isinstance(bb, np.ndarray):
        bb = bb.tolist()
    if not (isinstance(bb, (list, tuple)) and len(bb) == 4):
        raise EvalInputError(f"{where}: 'bbox' must be 4 numbers [x, y, w, h], got {bb!r}")
    bad = next((p for p in map(_number_problem, bb) if p), None)
    if bad:
        raise EvalInputError(f"{where}: 'bbox' must be 4 numbers [x, y, w, h], got {bb!r} ({bad})")
    if not all(math.isfinite(v) for v in bb) or bb[2] < 0 or bb[3] < 0:
        raise EvalInputError(
            f"{where}: 'bbox' {bb!r} must be finite with width and height >= 0 {hint}"
        )
    return bb


def _gt_ids(records: list, key: str, what: str, source: str, strings: bool, converted: list):
    """The ids of the ``images`` or ``categories`` records, checked (``converted``: where a
    whole-valued float was read as an integer)."""
    out = []
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or key not in rec:
            raise EvalInputError(f"ground-truth {source}: {what}[{i}] has no '{key}'")
        why = _id_problem(rec[key], strings)
        if why:
            raise EvalInputError(
                f"ground-truth {source}: {what}[{i}]: '{key}' {why}. Fix: use integer ids "
                "(or, for images only, string ids on every image)"
            )
        if isinstance(rec[key], _FLOAT):
            converted.append(f"{what}[{i}].{key}")
        out.append(_as_id(rec[key]))
    return out


def load_gt(gt: Any) -> GroundTruth:
    """Accept a path, a COCO-format dict or a ``pycocotools.coco.COCO`` object.

    Image ids are integers, or strings on every image (``"img_001"``; pycocotools accepts them,
    and so does each backend here, with the same numbers: images are ordered by sorted id, as
    pycocotools orders them, so ``"10"`` comes before ``"9"``). Category and annotation ids are
    integers. A whole-valued float id (``3.0``) is read as the integer, with a warning.
    """
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
    converted: list[str] = []
    images = data["images"]
    strings = bool(images) and isinstance(images[0], dict) and isinstance(images[0].get("id"), str)
    img_list = sorted(set(_gt_ids(images, "id", "images", source, strings, converted)))
    img_ids = np.array(img_list, dtype=str if strings else np.int64)
    img_pos = {v: i for i, v in enumerate(img_list)}
    cats = data["categories"]
    cat_keys = _gt_ids(cats, "id", "categories", source, False, converted)
    cat_map = {k: str(c.get("name", k)) for k, c in zip(cat_keys, cats)}
    cat_list = sorted(cat_map)
    cat_ids = np.array(cat_list, dtype=np.int64)
    cat_names = [cat_map[c] for c in cat_list]
    cat_pos = {v: i for i, v in enumerate(cat_list)}

    anns = data["annotations"]
    n = len(anns)
    img = np.empty(n, np.int64)
    cat = np.empty(n, np.int64)
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
            why = _id_problem(a["id"])
            if why:
                raise EvalInputError(f"{where}: 'id' {why}")
            ann_ids[i] = int(a["id"])
        where += f" (id {a.get('id', '?')})"
        for key in ("image_id", "category_id", "bbox"):
            if key not in a:
                raise EvalInputError(f"{where} has no '{key}'")
        for key, str_ids in (("image_id", strings), ("category_id", False)):
            why = _id_problem(a[key], str_ids)
            if why:
                raise EvalInputError(f"{where}: '{key}' {why}")
            if isinstance(a[key], _FLOAT):
                converted.append(f"annotations[{i}].{key}")
        img[i] = img_pos.get(_as_id(a["image_id"]), -1)
        cat[i] = cat_pos.get(int(a["category_id"]), -1)
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
    if converted:
        _warn(
            f"ground-truth {source}: {len(converted)} ids are whole-valued floats (first: "
            f"{converted[0]}); they are read as integers, as pycocotools does: write integers to "
            "silence this",
            notes,
        )
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
    known = (img >= 0) & (cat >= 0)
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
        img=img[keep],
        cat=cat[keep],
        bbox=bbox[keep],
        area=area[keep],
        crowd=crowd[keep],
        ann_ids=ann_ids[keep],
        coco=coco,
        dataset=data,
        warnings=notes,
    )


def _check_record(i: int, r: Any, gt: GroundTruth, img_set: set, cat_set: set, source: str):
    """Raise the precise error for result record ``i``, if it has one."""
    where = f"results {source}: record [{i}]"
    if not isinstance(r, dict):
        raise EvalInputError(f"{where} is not an object but {type(r).__name__}")
    for key in ("image_id", "category_id", "bbox", "score"):
        if key not in r:
            raise EvalInputError(
                f"{where} has no '{key}' (each result needs image_id, category_id, "
                "bbox [x, y, w, h] and score)"
            )
    for key, str_ids in (("image_id", gt.string_ids), ("category_id", False)):
        why = _id_problem(r[key], str_ids)
        if why:
            raise EvalInputError(f"{where}: '{key}' {why}")
    if _as_id(r["image_id"]) not in img_set:
        raise EvalInputError(
            f"{where}: image_id {r['image_id']!r} is not in the ground truth "
            f"{gt.source} (results must use the GT's own image ids)"
        )
    if int(r["category_id"]) not in cat_set:
        raise EvalInputError(
            f"{where}: category_id {r['category_id']!r} is not a category of the ground truth "
            f"{gt.source} (known ids: {sorted(cat_set)[:20]}; map model labels to dataset ids)"
        )
    s = r["score"]
    why = _number_problem(s)
    if why:
        raise EvalInputError(f"{where}: 'score' {why}")
    if not math.isfinite(s) or s < 0:
        raise EvalInputError(
            f"{where} (image_id {r['image_id']}): score {s!r} must be a finite number >= 0"
        )
    _checked_bbox(r["bbox"], where, "(COCO results use [x, y, w, h], not [x1, y1, x2, y2])")


def _diagnose_result(records: list, gt: GroundTruth, source: str, order=None) -> None:
    """Slow pass that finds the first bad record (in ``order``) and raises a precise error."""
    img_set = set(gt.img_ids.tolist())
    cat_set = set(gt.cat_ids.tolist())
    for i in range(len(records)) if order is None else order:
        _check_record(int(i), records[i], gt, img_set, cat_set, source)
    raise EvalInputError(f"results {source}: malformed records")  # pragma: no cover


def _result_ids(vals: list, strings: bool) -> tuple[np.ndarray | list, int] | None:
    """The image or category ids of all records, and how many were whole-valued floats;
    None when some value is not an id (the slow pass then names it)."""
    types = set(map(type, vals))
    if strings:
        return (vals, 0) if all(issubclass(t, str) for t in types) else None
    if all(_is_int_type(t) for t in types):
        try:
            return np.array(vals, np.int64), 0
        except OverflowError:
            return None
    if any(_id_problem(v) for v in vals):
        return None
    return np.array([int(v) for v in vals], np.int64), sum(isinstance(v, _FLOAT) for v in vals)


def _index_of(sorted_ids: np.ndarray, raw: np.ndarray) -> np.ndarray:
    """Index of each of ``raw`` in ``sorted_ids``, -1 where it is not there."""
    if not len(sorted_ids):
        return np.full(len(raw), -1, np.int64)
    idx = np.searchsorted(sorted_ids, raw)
    clipped = np.minimum(idx, len(sorted_ids) - 1)
    return np.where((idx < len(sorted_ids)) & (sorted_ids[clipped] == raw), clipped, -1)


def load_results(results: Any, gt: GroundTruth) -> Detections:
    """Accept a path or a list of ``{image_id, category_id, bbox, score}`` dicts.

    Refused, naming the record and the field: strings where numbers belong (``"score": "0.9"``,
    ``"bbox": ["1", ...]``), booleans (``"score": true``, ``"category_id": true``), fractional
    ids (``"image_id": 1.5``), integer image ids against a GT with string ids and the other way
    round. A whole-valued float id (``3.0``) is read as the integer, with one warning for the
    file, as pycocotools' lookups would match it.
    """
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
        img_vals = [r["image_id"] for r in records]
        cat_vals = [r["category_id"] for r in records]
        score_vals = [r["score"] for r in records]
        bb_vals = [r["bbox"] for r in records]
    except (KeyError, TypeError, IndexError):
        _diagnose_result(records, gt, source)
        raise  # pragma: no cover
    # Type checks on the set of value types (cheap); any surprise goes to the slow pass,
    # which names the first bad record.
    img_col = _result_ids(img_vals, gt.string_ids)
    cat_col = _result_ids(cat_vals, False)
    bbox = None
    if (
        img_col is not None
        and cat_col is not None
        and all(_is_number_type(t) for t in set(map(type, score_vals)))
        and all(issubclass(t, (list, tuple, np.ndarray)) for t in set(map(type, bb_vals)))
        and all(_is_number_type(t) for t in set(map(type, itertools.chain.from_iterable(bb_vals))))
    ):
        try:
            bbox = np.array(bb_vals, dtype=np.float64)
        except (TypeError, ValueError):  # ragged
            bbox = None
    if bbox is None or bbox.shape != (n, 4):
        _diagnose_result(records, gt, source)
    score = np.array(score_vals, dtype=np.float64)
    if gt.string_ids:
        pos = {v: i for i, v in enumerate(gt.img_ids.tolist())}
        img = np.fromiter((pos.get(v, -1) for v in img_vals), np.int64, n)
    else:
        img = _index_of(gt.img_ids, img_col[0])
    cat = _index_of(gt.cat_ids, cat_col[0])
    ok = (img >= 0) & (cat >= 0)
    ok &= np.isfinite(score) & (score >= 0)
    ok &= np.isfinite(bbox).all(1) & (bbox[:, 2] >= 0) & (bbox[:, 3] >= 0)
    if not ok.all():
        _diagnose_result(records, gt, source, order=np.flatnonzero(~ok)[:1])
    notes: list[str] = []
    floats = img_col[1] + cat_col[1]
    if floats:
        _warn(
            f"results {source}: {floats} image_id/category_id values are whole-valued floats "
            "(like 3.0); they are read as integers, as pycocotools does: write integers to "
            "silence this",
            notes,
        )
    return Detections(
        source, img.astype(np.int64), cat.astype(np.int64), bbox, score, records, notes
    )


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
