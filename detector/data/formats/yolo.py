"""YOLO txt labels to COCO, and COCO back to YOLO txt.

A YOLO label file ``labels/<sub>/<name>.txt`` belongs to the image ``images/<sub>/<name>.*``
and holds one object per line: ``class cx cy w h``, the centre and size divided by the image's
width and height, class = the line of the names file counted from 0. A line ``class x1 y1 x2
y2 ...`` (YOLO-seg polygons, normalised the same way) becomes its hull box with the polygon as
``segmentation``. An image without a label file is an image without objects (ultralytics' rule).

Category ids are ``class + 1`` with the names file's names; writing YOLO back numbers the
categories in sorted id order, so that converting back and forth keeps the classes.
"""

from __future__ import annotations

from pathlib import Path

from detector.utils.files import atomic_write_text

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

NAMES_FILE = "classes.names"  # written next to the exported labels
# names files that labelling tools (LabelImg, CVAT) leave among the label files
NAMES_IN_LABELS = ("classes.txt",)
DIGITS = 6  # decimals of the exported normalised coordinates (1e-6 of the side)


def read_yolo(
    labels: Path, *, images: Path | None, names: Path | None, options: Options
) -> Conversion:
    if images is None:
        raise ConversionError(
            "--from yolo needs --images: YOLO coordinates are fractions of the image size, "
            "which only the images know"
        )
    if names is None:
        raise ConversionError(
            "--from yolo needs --names: a file with one class name per line (line 1 = class 0), "
            "or an ultralytics data.yaml"
        )
    class_names = read_names(names)
    index = ImageIndex(images)
    notes = Notes()
    builder = CocoBuilder(class_names)
    root = labels if labels.is_dir() else labels.parent
    files = []
    for p in label_files(labels, ".txt"):
        if p.name in NAMES_IN_LABELS or p.resolve() == Path(names).resolve():
            notes.add("names files in the labels folder, not read as labels", str(p))
        else:
            files.append(p)
    labelled: dict[str, Path] = {}
    for path in files:
        stem = path.relative_to(root).with_suffix("").as_posix()
        labelled[stem] = path
    # every image, labelled or not, in the order of its path
    for stem in sorted(set(labelled) | (set(index.stems()) if labels.is_dir() else set())):
        label_file = labelled.get(stem)
        if label_file is None:
            image = index.find(stem)
            notes.add("images without a label file (kept, no objects)", str(image))
        else:
            image = index.require(stem, label_file)
        assert image is not None
        width, height = image_size(image)
        image_id = builder.add_image(index.file_name(image), width, height)
        if label_file is not None:
            _read_file(label_file, image_id, width, height, class_names, builder, options, notes)
    return Conversion(builder.finish(labels, images), notes)


def _read_file(
    path: Path,
    image_id: int,
    width: int,
    height: int,
    class_names: list[str],
    builder: CocoBuilder,
    options: Options,
    notes: Notes,
) -> None:
    for lineno, line in enumerate(read_lines(path), 1):
        fields = line.split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        n = len(fields)
        if n != 5 and (n < 7 or n % 2 == 0):
            extra = (
                " (6 fields: a confidence? that is a results file, not labels)" if n == 6 else ""
            )
            raise ConversionError(
                f"{where}: malformed line {line.strip()!r}: {n} fields{extra}. Fix: write "
                "'class cx cy w h' (normalised to [0, 1]) or 'class x1 y1 x2 y2 x3 y3 ...'."
            )
        cls = to_int(fields[0], where, "class id")
        if not 0 <= cls < len(class_names):
            raise ConversionError(
                f"{where}: class id {cls} is outside the names file, which lists "
                f"{len(class_names)} classes (ids 0..{len(class_names) - 1}). Fix: add the "
                "class to --names or correct the label."
            )
        values = [to_float(v, where, f"field {i}") for i, v in enumerate(fields[1:], 2)]
        if max(abs(v) for v in values) > 2.0:
            raise ConversionError(
                f"{where}: coordinates {fields[1:]} are not normalised (YOLO divides them by "
                f"the image size, {width}x{height} here). Fix: divide x by the width and y by "
                "the height."
            )
        segmentation = None
        if n == 5:
            cx, cy, w, h = values
            if w < 0 or h < 0:
                raise ConversionError(f"{where}: negative width or height in {line.strip()!r}")
            box = (
                (cx - w / 2) * width,
                (cy - h / 2) * height,
                (cx + w / 2) * width,
                (cy + h / 2) * height,
            )
        else:
            pixels = [v * (width if i % 2 == 0 else height) for i, v in enumerate(values)]
            box, segmentation = polygon_hull(pixels)
        fitted = fit_box(box, width, height, where=where, outside=options.outside, notes=notes)
        if fitted is not None:
            builder.add_box(image_id, cls + 1, fitted, segmentation=segmentation)


def write_yolo(coco: dict, out_dir: str | Path) -> Notes:
    """One ``.txt`` per image (an empty one for an image without objects) under ``out_dir``,
    mirroring the images' paths, and ``classes.names``; each file is written atomically.

    YOLO has no ignore regions: crowd annotations are left out, and counted in the notes.
    """
    out = Path(out_dir)
    notes = Notes()
    categories = sorted(coco["categories"], key=lambda c: c["id"])
    index = {c["id"]: i for i, c in enumerate(categories)}
    per_image: dict[int, list[dict]] = {im["id"]: [] for im in coco["images"]}
    for ann in coco["annotations"]:
        if ann.get("iscrowd", 0):
            notes.add(
                "ignore regions left out (YOLO has none)",
                f"annotation {ann['id']} (image {ann['image_id']})",
            )
            continue
        per_image[ann["image_id"]].append(ann)
    for im in coco["images"]:
        width, height = float(im["width"]), float(im["height"])
        lines = []
        for ann in per_image[im["id"]]:
            x, y, w, h = ann["bbox"]
            values = ((x + w / 2) / width, (y + h / 2) / height, w / width, h / height)
            lines.append(
                " ".join([str(index[ann["category_id"]])] + [f"{v:.{DIGITS}f}" for v in values])
            )
        target = out / Path(im["file_name"]).with_suffix(".txt")
        atomic_write_text("".join(f"{line}\n" for line in lines), target)
    atomic_write_text("".join(f"{c['name']}\n" for c in categories), out / NAMES_FILE)
    return notes
