"""Load and check COCO-format detection annotations.

Every fault found in real datasets is turned into a :class:`DatasetError` whose message names
the file, the image or annotation id, the field and the fix. Faults that can be repaired safely
(degenerate boxes, boxes reaching outside the image, missing ``area``/``iscrowd``, an ``area``
that disagrees with the box) are repaired and counted in a :class:`ValidationReport`; with
``strict=True`` degenerate boxes are errors instead.

Conventions of the cleaned output:

* boxes stay in COCO ``[x, y, w, h]`` (the dataset class converts them to xyxy once);
* a box reaching outside the image is clipped to it and its ``area`` is left as written, unless
  the area is recomputed (``bad_area="recompute"``);
* a missing ``area`` becomes ``w*h``, a missing ``iscrowd`` becomes 0 (both counted).
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.utils.errors import SmalldetError
from detector.utils.files import read_json as _read_json
from detector.utils.numbers import is_number

logger = logging.getLogger(__name__)

REQUIRED_TOP = ("images", "annotations", "categories")
# An area further than this factor from w*h (either way) counts as disagreeing with the box.
AREA_FACTOR = 4.0
# Warn about bad areas when at least this fraction of the annotations disagrees.
AREA_FRACTION = 0.05
BAD_AREA_MODES = ("warn", "recompute", "error")


class DatasetError(SmalldetError, ValueError):
    """A dataset that cannot be used as written; the message says where and how to fix it."""


@dataclass
class ValidationReport:
    """Counts of what validation repaired or dropped (all zero for a clean file)."""

    file: str = ""
    images: int = 0
    annotations: int = 0  # annotations kept
    categories: int = 0
    empty_images: int = 0  # images with no (kept) annotation
    dropped_nan: int = 0  # bbox with NaN/inf values
    dropped_degenerate: int = 0  # w <= 0 or h <= 0 (before or after clipping)
    clipped: int = 0  # boxes reaching outside the image, clipped to it
    area_missing: int = 0  # area absent: set to w*h
    area_bad: int = 0  # area disagreeing with the box by more than AREA_FACTOR
    area_recomputed: int = 0  # areas replaced by w*h (bad_area=recompute)
    iscrowd_missing: int = 0  # iscrowd absent: set to 0
    bad_area_example: int | None = None  # one annotation id with a bad area
    messages: list[str] = field(default_factory=list)  # the warnings emitted, in order

    @property
    def modified(self) -> bool:
        """Whether the cleaned annotations differ from the file on disk."""
        return bool(
            self.dropped_nan
            or self.dropped_degenerate
            or self.clipped
            or self.area_missing
            or self.area_recomputed
            or self.iscrowd_missing
        )

    def warn(self, msg: str) -> None:
        self.messages.append(msg)
        logger.warning(msg)


def read_json(path: str | Path, key: str = "data.*_ann") -> Any:
    """Parse an annotation file; a missing file or a syntax error becomes a DatasetError.

    ``key`` is the setting the path came from, named in the fix.
    """
    return _read_json(
        path,
        what="annotation file",
        error=DatasetError,
        fix=f"check {key} (paths are relative to the working directory)",
    )


def _is_int(v: Any) -> bool:
    """A JSON integer (not a bool, not ``1.0``): ids are dict keys, and ``1.0 == 1`` hides typos."""
    return isinstance(v, int) and not isinstance(v, bool)


def _polygon_area(seg: Any) -> float | None:
    """Area of COCO polygon segmentation (shoelace), None if it is not a polygon list."""
    if not isinstance(seg, list) or not seg:
        return None
    total = 0.0
    for poly in seg:
        if not isinstance(poly, list) or len(poly) < 6 or not all(is_number(v) for v in poly):
            return None
        xs, ys = poly[0::2], poly[1::2]
        s = 0.0
        for i in range(len(xs)):
            j = (i + 1) % len(xs)
            s += xs[i] * ys[j] - xs[j] * ys[i]
        total += abs(s) / 2.0
    return total


def resolve_image_path(
    root: str | Path, file_name: str, *, ann_file: str | Path = "", image_id: Any = None
) -> Path:
    """``root / file_name``, refused if it lies outside ``root`` (path traversal).

    The check is on the normalised name, not on symlink targets: a dataset whose image files
    are symlinks into a shared store is fine, a ``file_name`` with ``..`` or ``/`` is not.
    """
    root_r = Path(root).resolve()
    fix = (
        "Fix: file_name must be a path relative to the image root (no '..' and no absolute "
        "paths), naming a file inside it."
    )
    try:
        path = Path(os.path.normpath(root_r / file_name))
    except (TypeError, ValueError) as err:  # e.g. an embedded NUL byte
        raise DatasetError(
            f"{ann_file}: image {image_id}: field 'file_name' = {file_name!r} is not a valid "
            f"path ({err}). {fix}"
        ) from None
    if root_r not in path.parents:
        raise DatasetError(
            f"{ann_file}: image {image_id}: field 'file_name' = {file_name!r} resolves to {path}, "
            f"outside the image root {root_r}; refused. {fix}"
        )
    return path


def _check_list(data: dict, key: str, path: Path) -> list:
    if key not in data:
        raise DatasetError(
            f"{path}: missing top-level key '{key}' (found: {sorted(data)}). Fix: a COCO "
            f"detection file needs 'images', 'annotations' and 'categories' lists; add "
            f'"{key}": [] if there are none.'
        )
    value = data[key]
    if not isinstance(value, list):
        raise DatasetError(
            f"{path}: top-level '{key}' must be a list, got {type(value).__name__}. "
            f'Fix: write "{key}": [ ... ].'
        )
    return value


def _require(rec: Any, keys: tuple[str, ...], what: str, idx: int, path: Path) -> None:
    if not isinstance(rec, dict):
        raise DatasetError(
            f"{path}: {what} #{idx} is a {type(rec).__name__}, not an object. Fix: each entry must be a JSON object."
        )
    for k in keys:
        if k not in rec:
            ident = f" id {rec['id']}" if "id" in rec else f" #{idx} (no id)"
            raise DatasetError(
                f"{path}: {what}{ident}: missing field '{k}'. Fix: every {what} needs "
                f"{', '.join(repr(x) for x in keys)}."
            )


def validate_coco(
    data: Any,
    ann_file: str | Path = "<memory>",
    *,
    image_root: str | Path | None = None,
    strict: bool = False,
    bad_area: str = "warn",
) -> tuple[dict, ValidationReport]:
    """Check a parsed COCO dict; return ``(cleaned_dict, report)`` or raise DatasetError.

    ``image_root``, when given, is used to refuse ``file_name`` values that resolve outside it.
    The input is not modified.
    """
    path = Path(ann_file)
    if bad_area not in BAD_AREA_MODES:
        raise DatasetError(f"data.bad_area={bad_area!r}: use one of {list(BAD_AREA_MODES)}")
    report = ValidationReport(file=str(path))
    if not isinstance(data, dict):
        raise DatasetError(
            f"{path}: top level is a JSON {type(data).__name__}, expected an object with "
            "'images', 'annotations' and 'categories'. Fix: this may be a results file "
            "(a list of detections), not a ground-truth file."
        )
    images_in = _check_list(data, "images", path)
    anns_in = _check_list(data, "annotations", path)
    cats_in = _check_list(data, "categories", path)

    # categories
    cats: list[dict] = []
    cat_ids: set = set()
    for i, c in enumerate(cats_in):
        _require(c, ("id",), "category", i, path)
        if not isinstance(c["id"], int) or isinstance(c["id"], bool):
            raise DatasetError(
                f"{path}: category #{i}: field 'id' = {c['id']!r} must be an integer. Fix: use integer category ids."
            )
        if c["id"] in cat_ids:
            raise DatasetError(
                f"{path}: category id {c['id']} appears twice. Fix: category ids must be unique."
            )
        cat_ids.add(c["id"])
        cats.append({**c, "name": str(c.get("name", c["id"]))})
    if not cats:
        # no class: nothing to train, and no category to write a detection back as
        raise DatasetError(
            f"{path}: section 'categories' is empty. Fix: list every class as "
            '{"id": 1, "name": "..."} (the same list in the train and val files).'
        )

    # images
    images: list[dict] = []
    img_by_id: dict = {}
    id_by_file: dict[str, int] = {}
    for i, im in enumerate(images_in):
        _require(im, ("id", "file_name", "width", "height"), "image", i, path)
        iid = im["id"]
        if not isinstance(iid, int) or isinstance(iid, bool):
            raise DatasetError(
                f"{path}: image #{i}: field 'id' = {iid!r} must be an integer. Fix: use integer image ids."
            )
        if iid in img_by_id:
            raise DatasetError(
                f"{path}: duplicate image id {iid} (files {img_by_id[iid]['file_name']!r} and "
                f"{im['file_name']!r}). Fix: give every image a unique 'id' and point each "
                "annotation's 'image_id' at the right one."
            )
        for k in ("width", "height"):
            v = im[k]
            if not is_number(v) or not math.isfinite(v) or v <= 0 or v != int(v):
                raise DatasetError(
                    f"{path}: image {iid} ({im['file_name']!r}): field '{k}' = {v!r} must be a "
                    "positive whole number of pixels. Fix: write the real pixel size of the image."
                )
        name = im["file_name"]
        if not isinstance(name, str) or not name or "\0" in name:
            raise DatasetError(
                f"{path}: image {iid}: field 'file_name' = {name!r} must be a non-empty path "
                "string. Fix: write the image's path relative to the image root."
            )
        if image_root is not None:
            resolve_image_path(image_root, name, ann_file=path, image_id=iid)
        norm = os.path.normpath(name)
        if norm in id_by_file:
            # two records, one picture: it would be trained on and evaluated twice
            raise DatasetError(
                f"{path}: images {id_by_file[norm]} and {iid} have the same 'file_name' "
                f"{name!r}. Fix: list each image once and point all its annotations' 'image_id' "
                "at that one record."
            )
        id_by_file[norm] = iid
        img_by_id[iid] = im
        images.append(dict(im))

    # annotations
    anns: list[dict] = []
    ann_ids: set = set()
    bad_area_ids: list = []
    per_image: dict = {iid: 0 for iid in img_by_id}
    for i, a in enumerate(anns_in):
        _require(a, ("id", "image_id", "category_id", "bbox"), "annotation", i, path)
        aid = a["id"]
        if not _is_int(aid):
            raise DatasetError(
                f"{path}: annotation #{i}: field 'id' = {aid!r} must be an integer. "
                "Fix: give every annotation a unique integer 'id'."
            )
        for k, what in (("image_id", "image"), ("category_id", "category")):
            if not _is_int(a[k]):
                raise DatasetError(
                    f"{path}: annotation {aid}: field '{k}' = {a[k]!r} must be an integer, the "
                    f"'id' of a{'n' if what == 'image' else ''} {what}. Fix: write the id as a "
                    "JSON integer (no quotes, no decimal point)."
                )
        if aid in ann_ids:
            raise DatasetError(
                f"{path}: annotation id {aid} appears twice. Fix: annotation ids must be unique (pycocotools would silently keep only one)."
            )
        ann_ids.add(aid)
        if a["image_id"] not in img_by_id:
            raise DatasetError(
                f"{path}: annotation {aid}: field 'image_id' = {a['image_id']!r} is not the id of "
                "any image in 'images'. Fix: add the image record or remove the annotation."
            )
        if a["category_id"] not in cat_ids:
            raise DatasetError(
                f"{path}: annotation {aid}: field 'category_id' = {a['category_id']!r} is not in "
                f"'categories' (ids {sorted(cat_ids)}). Fix: add the category or remove/relabel "
                "the annotation."
            )
        bbox = a["bbox"]
        im = img_by_id[a["image_id"]]
        where = f"{path}: annotation {aid} (image {a['image_id']}, {im['file_name']!r})"
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
            raise DatasetError(
                f"{where}: field 'bbox' = {bbox!r} must be a list of 4 numbers "
                "[x, y, width, height]. Fix: rewrite the box in COCO xywh."
            )
        x, y, w, h = (float(v) for v in bbox)
        if not all(math.isfinite(v) for v in (x, y, w, h)):
            msg = f"{where}: field 'bbox' = {bbox} contains NaN or infinity"
            if strict:
                raise DatasetError(
                    msg
                    + ". Fix: repair or remove the annotation (or set data.strict=false to drop it)."
                )
            report.dropped_nan += 1
            continue
        if w <= 0 or h <= 0:
            msg = f"{where}: field 'bbox' = {bbox} has width or height <= 0"
            if strict:
                raise DatasetError(
                    msg
                    + ". Fix: repair or remove the annotation (or set data.strict=false to drop it)."
                )
            report.dropped_degenerate += 1
            continue
        W, H = float(im["width"]), float(im["height"])
        x0, y0, x1, y1 = max(x, 0.0), max(y, 0.0), min(x + w, W), min(y + h, H)
        if (x0, y0, x1, y1) != (x, y, x + w, y + h):
            if x1 <= x0 or y1 <= y0:
                msg = f"{where}: field 'bbox' = {bbox} lies entirely outside the {W:g}x{H:g} image"
                if strict:
                    raise DatasetError(msg + ". Fix: repair or remove the annotation.")
                report.dropped_degenerate += 1
                continue
            report.clipped += 1
        out = dict(a)
        out["bbox"] = [x0, y0, x1 - x0, y1 - y0]
        box_area = (x1 - x0) * (y1 - y0)
        if "area" not in a or not is_number(a["area"]) or not math.isfinite(a["area"]):
            report.area_missing += 1
            out["area"] = box_area
        else:
            area = float(a["area"])
            ratio = area / (w * h)
            if not (1.0 / AREA_FACTOR <= ratio <= AREA_FACTOR):
                poly = _polygon_area(a.get("segmentation"))
                explained = poly is not None and poly > 0 and 1 / 1.5 <= area / poly <= 1.5
                if not explained:
                    bad_area_ids.append(aid)
                    if bad_area == "recompute":
                        out["area"] = box_area
                        report.area_recomputed += 1
        if "iscrowd" not in a:
            report.iscrowd_missing += 1
            out["iscrowd"] = 0
        elif not isinstance(a["iscrowd"], int) or a["iscrowd"] not in (0, 1):
            # a string or null here would pass validation and fail in the middle of training
            raise DatasetError(
                f"{where}: field 'iscrowd' = {a['iscrowd']!r} must be 0 or 1. Fix: write 0 for "
                "an object, 1 for a crowd region (or leave the field out for 0)."
            )
        per_image[a["image_id"]] += 1
        anns.append(out)

    report.images = len(images)
    report.annotations = len(anns)
    report.categories = len(cats)
    report.empty_images = sum(1 for n in per_image.values() if n == 0)
    report.area_bad = len(bad_area_ids)
    if bad_area_ids:
        report.bad_area_example = bad_area_ids[0]
        frac = len(bad_area_ids) / max(1, len(anns_in))
        ex = next(a for a in anns if a["id"] == bad_area_ids[0])
        w, h = ex["bbox"][2], ex["bbox"][3]
        orig_area = next(
            a["area"] for a in anns_in if isinstance(a, dict) and a.get("id") == bad_area_ids[0]
        )
        msg = (
            f"{path}: {len(bad_area_ids)} of {len(anns_in)} annotations have an 'area' that "
            f"disagrees with their box by more than {AREA_FACTOR:g}x (e.g. annotation "
            f"{bad_area_ids[0]}: area {orig_area} vs box {w:g}x{h:g} = {w * h:g}). Size bins "
            "use 'area', so these objects land in the wrong bin (an area equal to the whole "
            "image puts everything in 'large')."
        )
        if bad_area == "error":
            raise DatasetError(
                msg
                + " Fix: set data.bad_area=recompute to replace area by w*h, or repair the file."
            )
        if bad_area == "recompute":
            report.warn(
                msg
                + f" Recomputed {report.area_recomputed} of them as w*h (data.bad_area=recompute)."
            )
        elif frac >= AREA_FRACTION:
            report.warn(msg + " Fix: set data.bad_area=recompute to replace area by w*h.")
        else:
            logger.info(msg)
    if report.dropped_nan:
        report.warn(
            f"{path}: dropped {report.dropped_nan} annotations whose bbox contains NaN/inf (data.strict=true makes this an error)."
        )
    if report.dropped_degenerate:
        report.warn(
            f"{path}: dropped {report.dropped_degenerate} annotations with width or height <= 0 "
            "or lying outside their image (data.strict=true makes this an error)."
        )
    if report.clipped:
        report.warn(
            f"{path}: clipped {report.clipped} boxes reaching outside their image to the image borders."
        )
    if report.area_missing:
        report.warn(f"{path}: {report.area_missing} annotations had no 'area'; set to w*h.")
    if report.iscrowd_missing:
        logger.info("%s: %d annotations had no 'iscrowd'; set to 0.", path, report.iscrowd_missing)

    cleaned = {k: v for k, v in data.items() if k not in REQUIRED_TOP}
    cleaned.update(images=images, annotations=anns, categories=cats)
    return cleaned, report


def load_coco_json(
    ann_file: str | Path,
    *,
    image_root: str | Path | None = None,
    strict: bool = False,
    bad_area: str = "warn",
    ann_key: str = "data.*_ann",
) -> tuple[dict, ValidationReport]:
    """Read and validate a COCO annotation file (see :func:`validate_coco`); ``ann_key`` is
    the setting the path came from, named when the file is missing."""
    return validate_coco(
        read_json(ann_file, ann_key),
        ann_file,
        image_root=image_root,
        strict=strict,
        bad_area=bad_area,
    )
