"""Datasets in their own label formats, converted to COCO JSON that passes the project's own
validation, and COCO back to YOLO txt.

    from detector.data.formats import Options, convert, write_coco
    result = convert("visdrone", "VisDrone2019-DET-val/annotations",
                     images="VisDrone2019-DET-val/images")
    write_coco(result.coco, "visdrone_val.json")
    print(result.summary(), *result.notes.lines(), sep="\\n")

One module per format (``yolo``, ``voc``, ``visdrone``, ``dota``, and ``coco_json`` for plain
COCO, AI-TOD and TinyPerson), sharing :mod:`.common`: the image index, the box checks, the
ignore-region rule (``iscrowd: 1``, written once per category where a region means "nothing
here counts") and the builder whose output is run through
:func:`~detector.data.validation.validate_coco` before anything is written. Every error names
the file and the line (or the record) and the fix: a malformed line, a class id outside the
names file, a box outside the image, a label file without an image.

Why our own code and not a library. globox 2.9 (numpy, rich, tqdm) reads YOLO and VOC, but not
VisDrone, DOTA or TinyPerson and has no ignore regions; it takes one image extension per folder,
fails with a bare ``KeyError`` on a label file without an image, reports a malformed line
without its line number, accepts class ids beyond the names and boxes outside the image
silently, and its COCO output starts annotation ids at 0 and names categories by their YOLO
index unless told otherwise. supervision 0.31 does YOLO/VOC/COCO well but pulls in PyAV,
SciPy, requests and matplotlib's stack for what is here a few hundred lines of parsing, and
has no ignore regions in YOLO or VOC either. Wrapping either in the checks above would be
more code than the parsing it saves; the formats are small and fixed, so they are parsed here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from detector.utils.files import atomic_write_json

from .coco_json import TINYPERSON_CLASS_MODES, read_aitod, read_coco, read_tinyperson
from .common import (
    DIFFICULT_MODES,
    OTHERS_MODES,
    OUTSIDE_MODES,
    Conversion,
    ConversionError,
    Notes,
    Options,
    check_choice,
)
from .dota import CLASSES as DOTA_CLASSES
from .dota import read_dota
from .visdrone import read_visdrone
from .voc import read_voc
from .yolo import read_yolo, write_yolo

Reader = Callable[..., Conversion]

# --from: the label format -> its reader(labels, images=, names=, options=)
READERS: dict[str, Reader] = {
    "yolo": read_yolo,
    "voc": read_voc,
    "visdrone": read_visdrone,
    "dota": read_dota,
    "tinyperson": read_tinyperson,
    "aitod": read_aitod,
    "coco": read_coco,
}
# --to: what the converted set is written as
WRITERS = ("coco", "yolo")


def convert(
    fmt: str,
    labels: str | Path,
    *,
    images: str | Path | None = None,
    names: str | Path | None = None,
    options: Options | None = None,
) -> Conversion:
    """Read ``labels`` (a folder of label files, or one file) in format ``fmt`` as a validated
    COCO dict; ``images`` is the image folder, ``names`` a class-names file."""
    options = options or Options()
    check_choice(fmt, list(READERS), "--from")
    check_choice(options.outside, OUTSIDE_MODES, "--outside")
    check_choice(options.difficult, DIFFICULT_MODES, "--difficult")
    check_choice(options.others, OTHERS_MODES, "--others")
    check_choice(options.tinyperson_classes, TINYPERSON_CLASS_MODES, "--tinyperson-classes")
    check_choice(options.dota_version, list(DOTA_CLASSES), "--dota-version")
    labels = Path(labels)
    if not labels.exists():
        raise ConversionError(f"{labels}: labels not found (--labels)")
    return READERS[fmt](
        labels,
        images=None if images is None else Path(images),
        names=None if names is None else Path(names),
        options=options,
    )


def write_coco(coco: dict, path: str | Path) -> Path:
    """The COCO JSON, written atomically (a crash leaves no half file)."""
    return atomic_write_json(coco, path)


__all__ = [
    "READERS",
    "WRITERS",
    "Conversion",
    "ConversionError",
    "Notes",
    "Options",
    "convert",
    "write_coco",
    "write_yolo",
]
