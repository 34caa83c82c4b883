"""DOTA labelTxt (v1.0, v1.5, v2.0) to COCO.

``labelTxt/<name>.txt`` belongs to ``images/<name>.png``. Optional header lines
(``imagesource:...``, ``gsd:...``) come first, then one object per line:
``x1 y1 x2 y2 x3 y3 x4 y4 class difficult`` (the four corners of the oriented box, in pixels;
some test files leave ``difficult`` out, read as 0).

Each quadrilateral becomes its axis-aligned hull, clipped to the image, with the quadrilateral
kept as written in ``segmentation`` (for oriented-box work later) and ``difficult`` kept as a
field; ``difficult="ignore"`` makes difficult objects ignore regions of their class, as DOTA's
own evaluation ignores them. Classes come from ``--names`` or the version's official list.
"""

from __future__ import annotations

from pathlib import Path

from detector.utils.suggest import suggest

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
    polygon_hull,
    read_lines,
    read_names,
    to_float,
    to_int,
)

CLASSES_V1_0 = (
    "plane",
    "ship",
    "storage-tank",
    "baseball-diamond",
    "tennis-court",
    "basketball-court",
    "ground-track-field",
    "harbor",
    "bridge",
    "large-vehicle",
    "small-vehicle",
    "helicopter",
    "roundabout",
    "soccer-ball-field",
    "swimming-pool",
)
CLASSES = {
    "1.0": CLASSES_V1_0,
    "1.5": (*CLASSES_V1_0, "container-crane"),
    "2.0": (*CLASSES_V1_0, "container-crane", "airport", "helipad"),
}


def read_dota(
    labels: Path, *, images: Path | None, names: Path | None, options: Options
) -> Conversion:
    if images is None:
        raise ConversionError("--from dota needs --images: the labelTxt files hold no image size")
    if names is not None:
        class_names = read_names(names)
    elif options.dota_version in CLASSES:
        class_names = list(CLASSES[options.dota_version])
    else:
        raise ConversionError(
            f"--dota-version {options.dota_version}{suggest(options.dota_version, CLASSES, 'versions')}"
        )
    builder = CocoBuilder(class_names)
    index = ImageIndex(images)
    notes = Notes()
    root = labels if labels.is_dir() else labels.parent
    for path in label_files(labels, ".txt"):
        image = index.require(path.relative_to(root).with_suffix("").as_posix(), path)
        width, height = image_size(image)
        image_id = builder.add_image(index.file_name(image), width, height)
        started = False  # header lines are allowed before the first object only
        for lineno, line in enumerate(read_lines(path), 1):
            fields = line.split()
            if not fields:
                continue
            where = f"{path}:{lineno}"
            if not started and len(fields) == 1 and ":" in fields[0]:
                continue  # imagesource:GoogleEarth, gsd:0.25
            started = True
            if len(fields) not in (9, 10):
                raise ConversionError(
                    f"{where}: malformed line {line.strip()!r}: {len(fields)} fields. Fix: DOTA "
                    "lines are 'x1 y1 x2 y2 x3 y3 x4 y4 class difficult'."
                )
            points = [to_float(v, where, f"coordinate {i}") for i, v in enumerate(fields[:8], 1)]
            name = fields[8]
            if name not in builder.cat_id:
                source = f"the names file {names}" if names else f"DOTA v{options.dota_version}"
                raise ConversionError(
                    f"{where}: class {name!r} is not in {source}. Fix: pass --dota-version 1.5 "
                    "or 2.0 for their added classes, or --names with your own list"
                    f"{suggest(name, class_names, 'classes')}"
                )
            difficult = to_int(fields[9], where, "difficult") if len(fields) == 10 else 0
            if difficult and options.difficult == "drop":
                notes.add("difficult objects dropped (--difficult drop)", where)
                continue
            hull, segmentation = polygon_hull(points)
            box = fit_box(hull, width, height, where=where, outside=options.outside, notes=notes)
            if box is None:
                continue
            builder.add_box(
                image_id,
                builder.cat_id[name],
                box,
                iscrowd=int(bool(difficult) and options.difficult == "ignore"),
                segmentation=segmentation,
                difficult=difficult,
            )
    return Conversion(builder.finish(labels, images), notes)
