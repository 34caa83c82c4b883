"""What every converter shares: the options, the error type, names files, the image index, the
box checks and the builder that turns boxes into a COCO dict that passes our own validation.

Conventions of every converter's output (so that the formats agree with one another):

* ids: images, annotations and categories numbered from 1 in a fixed order (sorted label files,
  the names file's order), unless the source is COCO-like JSON whose image ids are kept;
* boxes in pixels, COCO ``[x, y, w, h]``, ``area = w * h`` (what the size bins use);
* an ignore region is an annotation with ``iscrowd: 1``. pycocotools matches a detection to it
  by intersection over the detection's area and counts it neither as a hit nor as a miss, but
  only within the region's category: a region that means "nothing here counts" (VisDrone's
  category 0, TinyPerson's ignore flags) is therefore written once per category;
* a box reaching at most :data:`OUTSIDE_TOLERANCE_PX` outside its image (labelling tools round)
  is clipped; further out it is an error, or clipped with ``outside="clip"``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.data.validation import DatasetError, validate_coco
from detector.utils.suggest import suggest

# Image files looked for next to a label file (compared in lower case).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")
# How far (px) a box may reach outside its image and still be clipped silently.
OUTSIDE_TOLERANCE_PX = 2.0
# Clipping by less than this (px) is not worth a note: normalised coordinates' rounding.
NOTE_CLIP_PX = 0.01
# Box coordinates are written rounded to this many decimals (1e-4 px).
DECIMALS = 4
# Examples shown per kind of note before "... and N more".
NOTE_EXAMPLES = 3

OUTSIDE_MODES = ("error", "clip")
DIFFICULT_MODES = ("keep", "ignore", "drop")
OTHERS_MODES = ("keep", "ignore", "drop")


class ConversionError(DatasetError):
    """Input labels that cannot be converted; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class Options:
    """Choices a converter cannot guess; each is used by the formats named in its comment."""

    outside: str = "error"  # all: a box further outside than the tolerance: error | clip
    difficult: str = "keep"  # voc, dota: keep as object | ignore region (iscrowd 1) | drop
    others: str = "ignore"  # visdrone category 11: keep as a class | ignore region | drop
    ignore_flags: tuple[str, ...] = ("ignore", "uncertain")  # tinyperson: flags -> iscrowd 1
    tinyperson_classes: str = "person"  # tinyperson: merge into one "person" | keep
    dota_version: str = "1.0"  # dota: the class list, 1.0 | 1.5 | 2.0
    voc_one_based: bool = False  # voc: devkit pixel indices (x = xmin - 1, w = xmax - xmin + 1)


class Notes:
    """What a conversion repaired or decided, grouped by kind so that 10,000 files print a few
    lines: the count and the first examples of each kind."""

    def __init__(self) -> None:
        self._kinds: dict[str, list[str]] = {}

    def add(self, kind: str, example: str) -> None:
        self._kinds.setdefault(kind, []).append(example)

    def count(self, kind: str) -> int:
        return len(self._kinds.get(kind, []))

    def lines(self) -> list[str]:
        out = []
        for kind, examples in self._kinds.items():
            out.append(f"{kind}: {len(examples)}")
            out.extend(f"  {e}" for e in examples[:NOTE_EXAMPLES])
            if len(examples) > NOTE_EXAMPLES:
                out.append(f"  ... and {len(examples) - NOTE_EXAMPLES} more")
        return out


@dataclass
class Conversion:
    """A converted dataset: the validated COCO dict and the notes to show the user."""

    coco: dict
    notes: Notes = field(default_factory=Notes)

    def summary(self) -> str:
        anns = self.coco["annotations"]
        crowd = sum(1 for a in anns if a.get("iscrowd", 0))
        with_objects = {a["image_id"] for a in anns if not a.get("iscrowd", 0)}
        empty = len(self.coco["images"]) - len(with_objects)
        return (
            f"{len(self.coco['images'])} images ({empty} without objects), "
            f"{len(anns) - crowd} objects, {crowd} ignore regions (iscrowd 1), "
            f"{len(self.coco['categories'])} categories"
        )


def check_choice(value: str, choices: Sequence[str], what: str) -> str:
    if value not in choices:
        raise ConversionError(f"{what} = {value!r}{suggest(value, choices, 'choices')}")
    return value


# ---------------------------------------------------------------------------- input files


def label_files(labels: Path, suffix: str) -> list[Path]:
    """The label files under a folder (recursively, sorted), or the one file given."""
    if labels.is_file():
        return [labels]
    if not labels.is_dir():
        raise ConversionError(f"{labels}: labels not found (a folder of *{suffix} files)")
    files = sorted(p for p in labels.rglob(f"*{suffix}") if p.is_file())
    if not files:
        raise ConversionError(
            f"{labels}: no *{suffix} label files in this folder or below. Fix: point --labels "
            "at the folder that holds them (or check --from)."
        )
    return files


def read_lines(path: Path) -> list[str]:
    """A text label file's lines; an unreadable or non-UTF-8 file is a ConversionError."""
    try:
        return path.read_text(encoding="utf-8-sig").splitlines()
    except UnicodeDecodeError as err:
        raise ConversionError(f"{path}: not UTF-8 text ({err}). Fix: save it as UTF-8.") from None


def to_float(text: str, where: str, what: str) -> float:
    """A finite number from a label file; anything else names the file, the line and the field."""
    try:
        value = float(text)
    except ValueError:
        raise ConversionError(f"{where}: {what} = {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ConversionError(f"{where}: {what} = {text!r} is not a finite number")
    return value


def to_int(text: str, where: str, what: str) -> int:
    """A whole number written as ``3`` or ``3.0``."""
    value = to_float(text, where, what)
    if value != int(value):
        raise ConversionError(f"{where}: {what} = {text!r} is not a whole number")
    return int(value)


def read_names(path: str | Path) -> list[str]:
    """Class names, index = class id: a ``.names``/``.txt`` file (one name per line) or an
    ultralytics ``data.yaml`` (``names:`` as a list or as ``{id: name}``)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: names file not found (--names)")
    if path.suffix.lower() in (".yaml", ".yml"):
        return _yaml_names(path)
    lines = read_lines(path)
    while lines and not lines[-1].strip():
        lines.pop()
    names = []
    for lineno, line in enumerate(lines, 1):
        name = line.strip()
        if not name:
            raise ConversionError(
                f"{path}:{lineno}: empty line inside the names file: every line is a class and "
                "the line number is its id. Fix: remove the line or name the class."
            )
        names.append(name)
    return _unique_names(names, path)


def _yaml_names(path: Path) -> list[str]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConversionError(f"{path}: malformed YAML: {err}") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):
        ids = sorted(names)
        if ids != list(range(len(ids))):
            raise ConversionError(
                f"{path}: 'names' ids must be 0..{len(ids) - 1} without gaps, got {ids}"
            )
        names = [names[i] for i in ids]
    if not isinstance(names, list) or not names:
        raise ConversionError(
            f"{path}: no 'names' list (ultralytics data.yaml: names: [a, b] or names: {{0: a}})"
        )
    return _unique_names([str(n).strip() for n in names], path)


def _unique_names(names: list[str], path: Path) -> list[str]:
    seen: dict[str, int] = {}
    for i, name in enumerate(names):
        if name in seen:
            raise ConversionError(
                f"{path}: class {name!r} is listed twice (ids {seen[name]} and {i}). Fix: give "
                "every class one line."
            )
        seen[name] = i
    if not names:
        raise ConversionError(f"{path}: the names file lists no class")
    return names


class ImageIndex:
    """The images under a folder, found by their path without extension (``sub/name``), and
    their sizes read from the file header (PIL reads no pixels for that)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise ConversionError(f"{self.root}: image folder not found (--images)")
        self._by_stem: dict[str, list[Path]] = {}
        for p in sorted(self.root.rglob("*")):
            if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file():
                key = p.relative_to(self.root).with_suffix("").as_posix()
                self._by_stem.setdefault(key, []).append(p)

    def __len__(self) -> int:
        return len(self._by_stem)

    def stems(self) -> list[str]:
        return list(self._by_stem)

    def find(self, stem: str, where: str = "") -> Path | None:
        """The one image named ``stem`` (any extension), None if there is none."""
        found = self._by_stem.get(stem, [])
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ConversionError(
                f"{where or stem}: several images match {stem!r} ({names}) under {self.root}. "
                "Fix: keep one of them there."
            )
        return found[0] if found else None

    def require(self, stem: str, label_file: Path) -> Path:
        """The image of a label file; a label file without an image is an error."""
        path = self.find(stem, str(label_file))
        if path is None:
            raise ConversionError(
                f"{label_file}: label file without an image: no {stem}.* under {self.root} "
                f"(looked for {', '.join(IMAGE_EXTENSIONS)}). Fix: add the image, remove the "
                "label file, or point --images at the folder that holds the images."
            )
        return path

    def file_name(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()


def image_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from the image header; a corrupt file names itself."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            return int(im.width), int(im.height)
    except Exception as err:  # PIL raises many types for corrupt data
        raise ConversionError(
            f"{path}: cannot read the image size: {type(err).__name__}: {err}. Fix: re-encode "
            "or remove the image."
        ) from None


# ---------------------------------------------------------------------------------- boxes


def fit_box(
    box: tuple[float, float, float, float],
    width: int,
    height: int,
    *,
    where: str,
    outside: str,
    notes: Notes,
) -> tuple[float, float, float, float] | None:
    """``(x0, y0, x1, y1)`` clipped to the image, or None for an empty box (dropped, noted).

    A box that reaches further than the tolerance outside the image is an error with
    ``outside="error"``: a wrong image, wrong image size or unnormalised coordinates.
    """
    x0, y0, x1, y1 = (round(v, DECIMALS) for v in box)
    if x1 <= x0 or y1 <= y0:
        notes.add("empty boxes dropped (width or height <= 0)", f"{where}: {_fmt(box)}")
        return None
    beyond = max(-x0, -y0, x1 - width, y1 - height)
    if beyond > OUTSIDE_TOLERANCE_PX and outside == "error":
        raise ConversionError(
            f"{where}: box {_fmt(box)} (x0, y0, x1, y1) reaches {beyond:.1f} px outside the "
            f"{width}x{height} image. Fix: check that the label belongs to this image and that "
            "its coordinates are in the format's units, or pass --outside clip to clip such "
            "boxes to the image."
        )
    clipped = (max(x0, 0.0), max(y0, 0.0), min(x1, float(width)), min(y1, float(height)))
    if clipped != (x0, y0, x1, y1):
        if clipped[2] <= clipped[0] or clipped[3] <= clipped[1]:
            notes.add("boxes entirely outside their image dropped", f"{where}: {_fmt(box)}")
            return None
        if beyond >= NOTE_CLIP_PX:  # less is the rounding of normalised coordinates
            notes.add("boxes clipped to their image", f"{where}: {_fmt(box)} by {beyond:.2f} px")
    return clipped


def _side(lo: float, hi: float) -> float:
    """``hi - lo``, one float step shorter where ``lo + side`` would round past ``hi`` (the
    validation would clip that box by 1e-13 px and count it)."""
    side = hi - lo
    while lo + side > hi:
        side = math.nextafter(side, 0.0)
    return side


def _fmt(box: Iterable[float]) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


class CocoBuilder:
    """Collects images and boxes into a COCO dict; :meth:`finish` validates it."""

    def __init__(self, categories: Sequence[str] | Sequence[tuple[int, str]]) -> None:
        pairs = [c if isinstance(c, tuple) else (i, c) for i, c in enumerate(categories, 1)]
        self.categories = [{"id": cid, "name": name, "supercategory": ""} for cid, name in pairs]
        self.cat_id = {c["name"]: c["id"] for c in self.categories}
        self.images: list[dict] = []
        self.annotations: list[dict] = []

    def add_image(
        self, file_name: str, width: int, height: int, image_id: int | None = None, **extra: Any
    ) -> int:
        iid = len(self.images) + 1 if image_id is None else image_id
        self.images.append(
            {"id": iid, "file_name": file_name, "width": width, "height": height, **extra}
        )
        return iid

    def add_box(
        self,
        image_id: int,
        category_id: int,
        box: tuple[float, float, float, float],
        *,
        iscrowd: int = 0,
        segmentation: list[list[float]] | None = None,
        **extra: Any,
    ) -> None:
        x0, y0, x1, y1 = box
        w, h = _side(x0, x1), _side(y0, y1)
        ann: dict[str, Any] = {
            "id": len(self.annotations) + 1,
            "image_id": image_id,
            "category_id": category_id,
            "bbox": [x0, y0, w, h],
            "area": w * h,
            "iscrowd": iscrowd,
        }
        if segmentation is not None:
            ann["segmentation"] = segmentation
        ann.update(extra)
        self.annotations.append(ann)

    def add_ignore_everywhere(
        self, image_id: int, box: tuple[float, float, float, float], **extra: Any
    ) -> None:
        """An ignore region for every category (pycocotools matches crowds per category)."""
        for c in self.categories:
            self.add_box(image_id, c["id"], box, iscrowd=1, **extra)

    def finish(self, source: str | Path, image_root: str | Path | None = None) -> dict:
        """The COCO dict, checked by the project's validation as the loader will check it."""
        data = {
            "info": {"description": f"converted from {source} by smalldet convert"},
            "images": self.images,
            "annotations": self.annotations,
            "categories": self.categories,
        }
        return validated(data, source, image_root)


def validated(data: dict, source: str | Path, image_root: str | Path | None = None) -> dict:
    """``data`` as :func:`~detector.data.validation.validate_coco` cleans it; a converter must
    produce output it leaves unchanged, so a change here is refused as a converter bug."""
    cleaned, report = validate_coco(
        data, f"{source} (converted)", image_root=image_root, strict=True, bad_area="error"
    )
    if report.modified:
        raise AssertionError(f"converter output changed by validation: {report}")
    return cleaned


def polygon_hull(
    points: list[float],
) -> tuple[tuple[float, float, float, float], list[list[float]]]:
    """The axis-aligned hull ``(x0, y0, x1, y1)`` of a polygon and the polygon as COCO
    segmentation (kept as written, also where it reaches outside the image)."""
    xs, ys = points[0::2], points[1::2]
    return (min(xs), min(ys), max(xs), max(ys)), [list(points)]
