"""``smalldet convert``: labels in their own format to COCO JSON that passes the project's
validation, or to YOLO txt (``tools/convert.py`` is the same command).

    smalldet convert --from yolo|voc|visdrone|dota|tinyperson|aitod|coco --labels PATH
        [--images DIR] [--names FILE] --output OUT.json
    smalldet convert --to yolo --labels COCO.json --output DIR      (or --from X --to yolo)

Ignore regions become ``iscrowd: 1`` (VisDrone category 0 and score-0 boxes, TinyPerson's
ignore flags, DOTA/VOC difficult objects with ``--difficult ignore``). What each format reads
and decides is in detector/data/formats/ and docs/datasets.md. The output is written
atomically; a summary and the notes (repairs, stale VOC file names, images without labels)
are printed.

Exit codes: 0 written; 2 labels that cannot be converted (the message names the file and the
line), a flag that does not apply to the format, or a path that cannot be read or written;
argparse usage errors are 2 as well.
"""

from __future__ import annotations

import argparse
import logging

from detector.cli.main import UsageError, guarded

ERROR_EXIT = 2
FROM = ("yolo", "voc", "visdrone", "dota", "tinyperson", "aitod", "coco")
TO = ("coco", "yolo")
# the size bins each format's papers report (the hint printed after a conversion)
SIZE_BINS = {"visdrone": "aitod", "dota": "aitod", "aitod": "aitod", "tinyperson": "tinyperson"}
# format-specific flags: flag -> (Options field, the formats that use it)
FORMAT_FLAGS: dict[str, tuple[str, tuple[str, ...]]] = {
    "--difficult": ("difficult", ("voc", "dota")),
    "--others": ("others", ("visdrone",)),
    "--ignore-flags": ("ignore_flags", ("tinyperson",)),
    "--tinyperson-classes": ("tinyperson_classes", ("tinyperson",)),
    "--dota-version": ("dota_version", ("dota",)),
    "--voc-one-based": ("voc_one_based", ("voc",)),
}


def build_parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    p.add_argument("--from", dest="source", choices=FROM, help="the labels' format")
    p.add_argument("--to", dest="target", choices=TO, default="coco", help="output format")
    p.add_argument(
        "--labels",
        required=True,
        help="folder of label files, or the JSON file (tinyperson, aitod, coco)",
    )
    p.add_argument(
        "--images", default=None, help="image folder: sizes, and the image of each label"
    )
    p.add_argument(
        "--names", default=None, help="class names: one per line (line 1 = class 0) or a data.yaml"
    )
    p.add_argument("--output", required=True, help="OUT.json (--to coco) or a folder (--to yolo)")
    p.add_argument(
        "--outside",
        choices=("error", "clip"),
        default="error",
        help="a box reaching more than 2 px outside its image: error, or clip it",
    )
    g = p.add_argument_group("format options")
    g.add_argument(
        "--difficult",
        choices=("keep", "ignore", "drop"),
        help="voc, dota: difficult objects (keep)",
    )
    g.add_argument(
        "--others",
        choices=("keep", "ignore", "drop"),
        help="visdrone: category 11 'others' as a class, an ignore region or dropped (ignore)",
    )
    g.add_argument(
        "--ignore-flags",
        help="tinyperson: comma-separated flags that make an ignore region (ignore,uncertain)",
    )
    g.add_argument(
        "--tinyperson-classes",
        choices=("person", "keep"),
        help="tinyperson: one class 'person' as the benchmark scores it, or sea/earth (person)",
    )
    g.add_argument("--dota-version", choices=("1.0", "1.5", "2.0"), help="dota: class list (1.0)")
    g.add_argument(
        "--voc-one-based",
        action="store_true",
        default=None,
        help="voc: the devkit's 1-based pixel indices (x = xmin - 1, w = xmax - xmin + 1)",
    )
    return p


def _options(args: argparse.Namespace, source: str):
    from detector.data.formats import Options

    values = {}
    for flag, (name, formats) in FORMAT_FLAGS.items():
        value = getattr(args, name)
        if value is None:
            continue
        if source not in formats:
            raise UsageError(f"{flag} applies to --from {' / '.join(formats)}, not {source}")
        if name == "ignore_flags":
            value = tuple(f.strip() for f in value.split(",") if f.strip())
        values[name] = value
    return Options(outside=args.outside, **values)


def run(args: argparse.Namespace) -> int:
    from detector.data.formats import convert, write_coco, write_yolo

    source = args.source or ("coco" if args.target == "yolo" else None)
    if source is None:
        raise UsageError("--from FORMAT is needed (or --to yolo to export a COCO file)")
    logging.basicConfig(level=logging.ERROR)  # validation's warnings are printed as notes
    result = convert(
        source, args.labels, images=args.images, names=args.names, options=_options(args, source)
    )
    for line in result.notes.lines():
        print(line)
    if args.target == "yolo":
        notes = write_yolo(result.coco, args.output)
        for line in notes.lines():
            print(line)
        print(
            f"wrote YOLO labels to {args.output}/ (classes.names beside them): {result.summary()}"
        )
        return 0
    write_coco(result.coco, args.output)
    print(f"wrote {args.output}: {result.summary()}")
    bins = SIZE_BINS.get(source, "coco")
    print(f"size table: smalldet dataset-stats --ann {args.output} --bins {bins}")
    return 0


def main(argv: list[str] | None = None, prog: str | None = None) -> int:
    args = build_parser(prog).parse_args(argv)
    return guarded(lambda: run(args), ERROR_EXIT)
