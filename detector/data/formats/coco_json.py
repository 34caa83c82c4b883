"""COCO-like JSON sources: plain COCO, AI-TOD (COCO, validated) and TinyPerson (COCO plus its
ignore flags).

All three are checked by the project's validation first, so a structural fault gets its usual
message (file, record id, field, fix); repairs it makes (boxes clipped to their image, missing
``area``) are listed in the notes. Image ids and category ids stay as in the file.

TinyPerson marks boxes with ``ignore`` (crowds, ambiguous regions, reflections), ``uncertain``
(maybe not a person), ``logo`` and ``in_dense_image`` flags. Its benchmark scores one class,
"person", and treats ``ignore`` and ``uncertain`` boxes as neither positive nor negative: here
the flags named in ``ignore_flags`` make a box ``iscrowd: 1`` (pycocotools then matches a
detection to it by intersection over the detection's area, TinyPerson's own ignore rule), and
``tinyperson_classes="person"`` merges sea_person and earth_person into that one class. The
flags are kept as fields. Tiled "corner" files (several records per image file) are refused:
convert the untiled file and let training cut tiles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from detector.data.validation import read_json as read_annotation_json
from detector.data.validation import validate_coco
from detector.utils.numbers import is_number
from detector.utils.suggest import suggest

from .common import (
    CocoBuilder,
    Conversion,
    ConversionError,
    Notes,
    Options,
    fit_box,
)

AITOD_CLASSES = (
    "airplane",
    "bridge",
    "storage-tank",
    "ship",
    "swimming-pool",
    "vehicle",
    "person",
    "wind-mill",
)
TINYPERSON_FLAGS = ("ignore", "uncertain", "logo", "in_dense_image")
TINYPERSON_CLASS_MODES = ("person", "keep")


def _no_names(fmt: str, names: Path | None) -> None:
    if names is not None:
        raise ConversionError(f"--from {fmt} takes no --names: the JSON lists its categories")


def _load(labels: Path, images: Path | None, options: Options, notes: Notes) -> dict:
    """The file validated (and repaired) as the loader would, after the outside-box check."""
    if labels.is_dir():
        raise ConversionError(f"{labels}: --from with a COCO-like format takes the JSON file")
    raw = read_annotation_json(labels, "--labels")
    cleaned, report = validate_coco(raw, labels, image_root=images)
    if options.outside == "error":
        _check_outside(cleaned, raw, labels)
    for message in report.messages:
        notes.add("repaired by validation", message)
    if images is not None:
        missing = [
            im["file_name"] for im in cleaned["images"] if not (images / im["file_name"]).is_file()
        ]
        if missing:
            raise ConversionError(
                f"{labels}: {len(missing)} of {len(cleaned['images'])} images are not under "
                f"{images} (e.g. {missing[:3]}). Fix: point --images at the folder that holds "
                "the 'file_name' paths."
            )
    return cleaned


def _check_outside(cleaned: dict, raw: dict, labels: Path) -> None:
    """Boxes further outside their image than the other formats allow (validation clips any)."""
    sizes = {im["id"]: (im["width"], im["height"]) for im in cleaned["images"]}
    kept = {a["id"] for a in cleaned["annotations"]}
    for ann in raw["annotations"]:
        if ann["id"] not in kept:
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        width, height = sizes[ann["image_id"]]
        fit_box(
            (x, y, x + w, y + h),
            width,
            height,
            where=f"{labels}: annotation {ann['id']} (image {ann['image_id']})",
            outside="error",
            notes=Notes(),
        )


def read_coco(
    labels: Path, *, images: Path | None, names: Path | None, options: Options
) -> Conversion:
    _no_names("coco", names)
    notes = Notes()
    return Conversion(_load(labels, images, options, notes), notes)


def read_aitod(
    labels: Path, *, images: Path | None, names: Path | None, options: Options
) -> Conversion:
    _no_names("aitod", names)
    notes = Notes()
    data = _load(labels, images, options, notes)
    found = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    if set(found) != set(AITOD_CLASSES):
        notes.add(
            "categories differ from AI-TOD's 8 classes",
            f"{labels}: {found} (AI-TOD: {list(AITOD_CLASSES)})",
        )
    return Conversion(data, notes)


def read_tinyperson(
    labels: Path, *, images: Path | None, names: Path | None, options: Options
) -> Conversion:
    _no_names("tinyperson", names)
    notes = Notes()
    data = _load(labels, images, options, notes)
    tiled = [im["id"] for im in data["images"] if "corner" in im]
    if tiled:
        raise ConversionError(
            f"{labels}: images {tiled[:3]} carry a 'corner' (a tile of a larger image): a tiled "
            "TinyPerson file. Fix: convert the untiled file (e.g. tiny_set_train.json)."
        )
    flags = _checked_flags(data, options.ignore_flags, labels)
    if options.tinyperson_classes == "person":
        categories: list[tuple[int, str]] = [(1, "person")]
        category_of = dict.fromkeys((c["id"] for c in data["categories"]), 1)
    else:
        categories = [(c["id"], c["name"]) for c in data["categories"]]
        category_of = {c["id"]: c["id"] for c in data["categories"]}
    builder = CocoBuilder(categories)
    for im in data["images"]:
        builder.add_image(im["file_name"], im["width"], im["height"], image_id=im["id"])
    sizes = {im["id"]: (im["width"], im["height"]) for im in data["images"]}
    for ann in data["annotations"]:
        where = f"{labels}: annotation {ann['id']}"
        x, y, w, h = ann["bbox"]
        box = fit_box(
            (x, y, x + w, y + h), *sizes[ann["image_id"]], where=where, outside="clip", notes=notes
        )
        if box is None:
            continue
        extra = {k: ann[k] for k in TINYPERSON_FLAGS if k in ann}
        hit = [f for f in flags if _flag(ann, f, where)]
        if hit:
            notes.add(f"ignore regions from the flags {list(flags)}", f"{where}: {hit}")
            if len(categories) > 1:
                builder.add_ignore_everywhere(ann["image_id"], box, **extra)
            else:
                builder.add_box(ann["image_id"], categories[0][0], box, iscrowd=1, **extra)
        else:
            builder.add_box(
                ann["image_id"],
                category_of[ann["category_id"]],
                box,
                iscrowd=ann["iscrowd"],
                **extra,
            )
    if "in_dense_image" not in flags and any(
        _flag(a, "in_dense_image", "") for a in data["annotations"]
    ):
        notes.add(
            "boxes of dense images kept as objects",
            "the benchmark leaves dense images out: add in_dense_image to --ignore-flags to "
            "ignore them, or convert the file without dense images",
        )
    return Conversion(builder.finish(labels, images), notes)


def _checked_flags(data: dict, flags: tuple[str, ...], labels: Path) -> tuple[str, ...]:
    present = {k for a in data["annotations"] for k in a}
    for flag in flags:
        if flag not in TINYPERSON_FLAGS and flag not in present:
            raise ConversionError(
                f"--ignore-flags {flag!r}: no annotation of {labels} has that field"
                f"{suggest(flag, TINYPERSON_FLAGS, 'TinyPerson flags')}"
            )
    return flags


def _flag(ann: dict, flag: str, where: str) -> bool:
    value: Any = ann.get(flag, False)
    if isinstance(value, bool) or (is_number(value) and value in (0, 1)):
        return bool(value)
    raise ConversionError(f"{where}: field {flag!r} = {value!r} must be true or false")
