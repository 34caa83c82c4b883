"""VisDrone-DET txt to COCO.

``annotations/<name>.txt`` belongs to ``images/<name>.jpg``; one box per line:
``x,y,w,h,score,category,truncation,occlusion`` in pixels. In the ground truth, ``score`` 1
means "evaluated" and 0 "ignored"; category 0 is "ignored regions" and 11 "others".

What becomes an ignore region (``iscrowd: 1``), where naive converters drop the lines:

* category 0 (and ``others`` with the default ``others="ignore"``): a region where nothing
  counts, written once per category (pycocotools matches crowds within a category);
* a score-0 box of a real class: an object of that class not to be scored, in its category.

Category ids are VisDrone's own (1 pedestrian ... 10 motor, 11 others with ``others="keep"``);
truncation and occlusion are kept as fields of each annotation.
"""

from __future__ import annotations

from pathlib import Path

from .common import (
    CocoBuilder,
    Conversion,
    ConversionError,
    ImageIndex,
    Notes,
    Options,
    fit_box,
    image_size,
    label_files,
    read_lines,
    to_float,
    to_int,
)

CLASSES = (
    "pedestrian",
    "people",
    "bicycle",
    "car",
    "van",
    "truck",
    "tricycle",
    "awning-tricycle",
    "bus",
    "motor",
)
IGNORED_REGION = 0
OTHERS = 11
OTHERS_NAME = "others"


def read_visdrone(
    labels: Path, *, images: Path | None, names: Path | None, options: Options
) -> Conversion:
    if images is None:
        raise ConversionError("--from visdrone needs --images: the txt files hold no image size")
    if names is not None:
        raise ConversionError("--from visdrone takes no --names: VisDrone's classes are fixed")
    categories = list(enumerate(CLASSES, 1))
    if options.others == "keep":
        categories.append((OTHERS, OTHERS_NAME))
    builder = CocoBuilder(categories)
    index = ImageIndex(images)
    notes = Notes()
    root = labels if labels.is_dir() else labels.parent
    for path in label_files(labels, ".txt"):
        image = index.require(path.relative_to(root).with_suffix("").as_posix(), path)
        width, height = image_size(image)
        image_id = builder.add_image(index.file_name(image), width, height)
        for lineno, line in enumerate(read_lines(path), 1):
            if line.strip():
                _add_line(
                    line, f"{path}:{lineno}", image_id, width, height, builder, options, notes
                )
    return Conversion(builder.finish(labels, images), notes)


def _add_line(
    line: str,
    where: str,
    image_id: int,
    width: int,
    height: int,
    builder: CocoBuilder,
    options: Options,
    notes: Notes,
) -> None:
    fields = [f.strip() for f in line.strip().rstrip(",").split(",")]
    if len(fields) != 8:
        raise ConversionError(
            f"{where}: malformed line {line.strip()!r}: {len(fields)} fields. Fix: VisDrone-DET "
            "lines are 'x,y,w,h,score,category,truncation,occlusion' (8 numbers)."
        )
    x, y, w, h = (to_float(v, where, k) for v, k in zip(fields[:4], ("x", "y", "w", "h")))
    score = to_int(fields[4], where, "score")
    category = to_int(fields[5], where, "category")
    truncation = to_int(fields[6], where, "truncation")
    occlusion = to_int(fields[7], where, "occlusion")
    if not IGNORED_REGION <= category <= OTHERS:
        raise ConversionError(
            f"{where}: category {category} is not a VisDrone-DET category (0 ignored regions, "
            "1-10 the classes, 11 others)"
        )
    if category == OTHERS and options.others == "drop":
        notes.add("'others' boxes dropped (--others drop)", where)
        return
    box = fit_box(
        (x, y, x + w, y + h), width, height, where=where, outside=options.outside, notes=notes
    )
    if box is None:
        return
    extra = {"truncation": truncation, "occlusion": occlusion}
    if category == IGNORED_REGION or (category == OTHERS and options.others == "ignore"):
        builder.add_ignore_everywhere(image_id, box, **extra)
    else:
        builder.add_box(image_id, category, box, iscrowd=int(score == 0), **extra)
