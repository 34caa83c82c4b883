"""Pascal VOC XML to COCO.

One XML per image: ``<filename>``, ``<size>`` and one ``<object>`` per box with ``<name>``,
``<difficult>`` and ``<bndbox>`` (``xmin ymin xmax ymax``). The coordinates are taken as written
(``x = xmin``, ``w = xmax - xmin``), as LabelImg, CVAT and most exporters write them;
``voc_one_based`` reads the original devkit's 1-based inclusive pixel indices instead
(``x = xmin - 1``, ``w = xmax - xmin + 1``).

``<filename>`` is often stale (another extension, a renamed file): when the named image is not
under ``--images``, the image with the XML file's own stem is taken, and the notes say so. The
image's size, when it is at hand, must agree with ``<size>`` (a ``<size>`` of 0 is replaced).
Class names come from ``--names`` when given (a name outside it is an error), else they are the
sorted names found (the 20 VOC classes come out in the devkit's order, which is alphabetical).

The XML is read with expat directly so that an error can name the line of the object.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from xml.parsers import expat

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
    read_names,
    to_float,
    to_int,
)


@dataclass
class Node:
    """An XML element with the line it starts on (ElementTree keeps no line numbers)."""

    tag: str
    line: int
    text: str = ""
    children: list[Node] = field(default_factory=list)

    def find(self, tag: str) -> Node | None:
        return next((c for c in self.children if c.tag == tag), None)

    def text_of(self, tag: str) -> str | None:
        child = self.find(tag)
        return None if child is None else child.text.strip()


def parse_xml(path: Path) -> Node:
    """The element tree of an XML file; malformed XML names the file and the line."""
    parser = expat.ParserCreate()
    stack: list[Node] = [Node("#document", 0)]

    def start(tag: str, _attrs: dict) -> None:
        node = Node(tag, parser.CurrentLineNumber)
        stack[-1].children.append(node)
        stack.append(node)

    def end(_tag: str) -> None:
        stack.pop()

    def text(data: str) -> None:
        stack[-1].text += data

    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = text
    try:
        parser.Parse(path.read_bytes(), True)
    except expat.ExpatError as err:
        raise ConversionError(
            f"{path}:{err.lineno}: malformed XML ({expat.ErrorString(err.code)}, column "
            f"{err.offset + 1})"
        ) from None
    return stack[0].children[0]


@dataclass
class VocObject:
    name: str
    line: int
    box: tuple[float, float, float, float]
    difficult: int
    truncated: int


@dataclass
class VocFile:
    path: Path
    stem: str  # the XML's path under --labels, without extension
    filename: str | None
    size: tuple[int, int] | None  # (width, height) from <size>, None when absent or 0
    objects: list[VocObject]


def _read_file(path: Path, stem: str, options: Options) -> VocFile:
    root = parse_xml(path)
    if root.tag != "annotation":
        raise ConversionError(
            f"{path}:{root.line}: the root element is <{root.tag}>, not <annotation>: not a "
            "Pascal VOC file"
        )
    size = None
    size_node = root.find("size")
    if size_node is not None:
        where = f"{path}:{size_node.line}"
        w, h = (size_node.text_of(k) for k in ("width", "height"))
        if w and h:
            size = (to_int(w, where, "<width>"), to_int(h, where, "<height>"))
            if size[0] <= 0 or size[1] <= 0:
                size = None
    objects = []
    for obj in (c for c in root.children if c.tag == "object"):
        where = f"{path}:{obj.line}"
        name = obj.text_of("name")
        if not name:
            raise ConversionError(f"{where}: <object> without a <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise ConversionError(f"{where}: <object> {name!r} without a <bndbox>")
        coords = []
        for key in ("xmin", "ymin", "xmax", "ymax"):
            value = bndbox.text_of(key)
            if value is None:
                raise ConversionError(f"{path}:{bndbox.line}: <bndbox> without <{key}>")
            coords.append(to_float(value, f"{path}:{bndbox.line}", f"<{key}>"))
        x0, y0, x1, y1 = coords
        if options.voc_one_based:
            x0, y0 = x0 - 1, y0 - 1
        flags = []
        for key in ("difficult", "truncated"):
            value = obj.text_of(key)
            flags.append(to_int(value, where, f"<{key}>") if value else 0)
        objects.append(VocObject(name, obj.line, (x0, y0, x1, y1), flags[0], flags[1]))
    return VocFile(path, stem, root.text_of("filename") or None, size, objects)


def read_voc(
    labels: Path, *, images: Path | None, names: Path | None, options: Options
) -> Conversion:
    root = labels if labels.is_dir() else labels.parent
    files = [
        _read_file(p, p.relative_to(root).with_suffix("").as_posix(), options)
        for p in label_files(labels, ".xml")
    ]
    if names is not None:
        class_names = read_names(names)
    else:
        class_names = sorted({o.name for f in files for o in f.objects})
        if not class_names:
            raise ConversionError(f"{labels}: no <object> in any XML file, so no class names")
    known = set(class_names)
    index = ImageIndex(images) if images is not None else None
    notes = Notes()
    builder = CocoBuilder(class_names)
    for f in files:
        file_name, width, height = _image_of(f, index, notes)
        image_id = builder.add_image(file_name, width, height)
        for obj in f.objects:
            where = f"{f.path}:{obj.line}"
            if obj.name not in known:
                raise ConversionError(
                    f"{where}: class {obj.name!r} is not in the names file {names} "
                    f"({len(class_names)} classes). Fix: add it to --names or relabel the object."
                )
            if obj.difficult and options.difficult == "drop":
                notes.add("difficult objects dropped (--difficult drop)", where)
                continue
            fitted = fit_box(
                obj.box, width, height, where=where, outside=options.outside, notes=notes
            )
            if fitted is None:
                continue
            crowd = int(bool(obj.difficult) and options.difficult == "ignore")
            builder.add_box(
                image_id,
                builder.cat_id[obj.name],
                fitted,
                iscrowd=crowd,
                difficult=obj.difficult,
                truncated=obj.truncated,
            )
    return Conversion(builder.finish(labels, images), notes)


def _image_of(f: VocFile, index: ImageIndex | None, notes: Notes) -> tuple[str, int, int]:
    """``(file_name, width, height)`` of the XML's image: ``<filename>`` if that image is under
    ``--images``, else the image with the XML's stem; sizes checked against ``<size>``."""
    if index is None:
        if f.filename is None or f.size is None:
            raise ConversionError(
                f"{f.path}: no <filename> or no <size> (width and height > 0) in the XML. Fix: "
                "pass --images so that the image and its size can be read from the files."
            )
        return f.filename, f.size[0], f.size[1]
    image = None
    if f.filename is not None:
        name = Path(f.filename).name  # a bare name: <filename> never leads out of --images
        for candidate in (index.root / Path(f.stem).parent / name, index.root / name):
            if candidate.is_file():
                image = candidate
                break
    if image is None:
        image = index.find(f.stem, str(f.path))
        if image is None:
            raise ConversionError(
                f"{f.path}: label file without an image: neither <filename> {f.filename!r} nor "
                f"{f.stem}.* is under {index.root}. Fix: add the image or correct <filename>."
            )
        if f.filename is not None:
            notes.add(
                "stale <filename>: took the image with the XML's stem",
                f"{f.path}: <filename> {f.filename!r} is not under {index.root}; took "
                f"{index.file_name(image)!r}",
            )
    width, height = image_size(image)
    if f.size is not None and f.size != (width, height):
        raise ConversionError(
            f"{f.path}: <size> {f.size[0]}x{f.size[1]} differs from the image {image} "
            f"({width}x{height}), so the boxes' frame is unknown. Fix: correct <size>, or check "
            "that the XML belongs to this image."
        )
    return index.file_name(image), width, height
