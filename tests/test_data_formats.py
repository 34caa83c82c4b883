"""Converters (detector/data/formats, ``smalldet convert``): real data converted one way must
give the other (YOLO <-> COCO on coco128 and the KIT AIS cars, DOTA labelTxt -> COCO on the
devkit example), and small hand-made inputs give the boxes worked out by hand, the ignore
regions and the errors that name the file and the line."""

from __future__ import annotations

import contextlib
import io
import json
from collections import Counter
from pathlib import Path

import pytest
from PIL import Image

from detector.cli.convert import main as convert_main
from detector.data.formats import ConversionError, Options, convert, write_coco, write_yolo
from detector.data.validation import load_coco_json

ROOT = Path(__file__).resolve().parents[1]
TOL_PX = 0.5  # the bar: converted boxes within half a pixel of the reference


# ------------------------------------------------------------------------------- helpers


def _by_image(coco: dict) -> dict[str, list[tuple[str, list[float]]]]:
    """file_name -> [(category name, bbox)] of the non-crowd annotations."""
    names = {c["id"]: c["name"] for c in coco["categories"]}
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    out: dict[str, list] = {f: [] for f in files.values()}
    for a in coco["annotations"]:
        if not a.get("iscrowd", 0):
            out[files[a["image_id"]]].append((names[a["category_id"]], a["bbox"]))
    return out


def _assert_same_boxes(got: dict, want: dict, tol: float = TOL_PX) -> int:
    """Same images, same counts per image and class, every box matched within ``tol`` px."""
    a, b = _by_image(got), _by_image(want)
    assert sorted(a) == sorted(b)
    matched = 0
    for file_name, expected in b.items():
        found = list(a[file_name])
        assert Counter(n for n, _ in found) == Counter(n for n, _ in expected), file_name
        for name, box in expected:
            best = min(
                (i for i, (n, _) in enumerate(found) if n == name),
                key=lambda i: max(abs(u - v) for u, v in zip(found[i][1], box)),
            )
            err = max(abs(u - v) for u, v in zip(found[best][1], box))
            assert err <= tol, (file_name, name, box, found[best][1])
            found.pop(best)
            matched += 1
    return matched


def _image(path: Path, size: tuple[int, int] = (100, 80)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size).save(path)
    return path


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _cli(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = convert_main(list(args))
    return code, out.getvalue(), err.getvalue()


# ----------------------------------------------------------------------------- real data


@pytest.mark.parametrize("name", ["kit_ais_aerial_cars", "coco128_val2017"])
def test_yolo_labels_give_the_coco_json(shared_data, name):
    d = shared_data / name
    result = convert("yolo", d / "labels_yolo", images=d / "images", names=d / "classes.names")
    want = json.loads((d / "annotations_coco.json").read_text())
    assert _assert_same_boxes(result.coco, want) == len(want["annotations"])
    # the categories keep the names file's order (coco128's JSON keeps COCO's ids 1..90)
    assert [c["name"] for c in result.coco["categories"]] == (
        d / "classes.names"
    ).read_text().split("\n")[: len(result.coco["categories"])]


def test_coco_json_gives_the_yolo_labels(shared_data, tmp_path):
    """COCO -> YOLO: the same class on every line, boxes within 0.5 px of the original labels
    (the JSON's boxes are clipped to the image, so the original is clipped the same way)."""
    d = shared_data / "kit_ais_aerial_cars"
    coco = json.loads((d / "annotations_coco.json").read_text())
    write_yolo(coco, tmp_path / "yolo")
    sizes = {Path(im["file_name"]).stem: (im["width"], im["height"]) for im in coco["images"]}
    lines = 0
    for original in sorted((d / "labels_yolo").glob("*.txt")):
        width, height = sizes[original.stem]
        ours = (tmp_path / "yolo" / original.name).read_text().splitlines()
        theirs = original.read_text().splitlines()
        assert len(ours) == len(theirs), original.name
        for mine, ref in zip(ours, theirs):
            m, r = mine.split(), ref.split()
            assert m[0] == r[0]
            cx, cy, w, h = map(float, r[1:])
            x0, y0 = max((cx - w / 2) * width, 0), max((cy - h / 2) * height, 0)
            x1, y1 = min((cx + w / 2) * width, width), min((cy + h / 2) * height, height)
            mx, my, mw, mh = map(float, m[1:])
            got = ((mx - mw / 2) * width, (my - mh / 2) * height, (mx + mw / 2) * width)
            assert max(abs(u - v) for u, v in zip(got, (x0, y0, x1))) <= TOL_PX
            assert abs((my + mh / 2) * height - y1) <= TOL_PX
            lines += 1
    assert lines == len(coco["annotations"]) == 2593
    names = (tmp_path / "yolo" / "classes.names").read_text().split()
    assert names == ["car", "truck", "bus", "minibus", "cyclist"]


def test_coco_to_yolo_and_back_round_trips(shared_data, tmp_path):
    d = shared_data / "kit_ais_aerial_cars"
    want = json.loads((d / "annotations_coco.json").read_text())
    write_yolo(want, tmp_path / "labels")
    back = convert(
        "yolo",
        tmp_path / "labels",
        images=d / "images",
        names=tmp_path / "labels" / "classes.names",
    )
    assert _assert_same_boxes(back.coco, want, tol=0.01) == 2593


def test_dota_labeltxt_gives_the_coco_json(shared_data):
    d = shared_data / "dota_devkit_example"
    result = convert("dota", d / "labelTxt", images=d / "images")
    want = json.loads((d / "annotations_coco_hbb.json").read_text())
    assert _assert_same_boxes(result.coco, want) == 600
    # the quadrilateral kept as segmentation, difficult kept, the same 6 difficult objects
    seg = {tuple(a["segmentation"][0]): a["difficult"] for a in result.coco["annotations"]}
    assert seg == {tuple(a["segmentation"][0]): a["difficult"] for a in want["annotations"]}
    assert sum(seg.values()) == 6
    assert len(result.coco["categories"]) == 15  # DOTA v1.0's own list
    first = result.coco["annotations"][0]  # "1054 1028 1063 1011 1111 1040 1112 1062 ship 1"
    assert first["bbox"] == [1054.0, 1011.0, 57.0, 51.0]  # hull x to 1112, clipped at 1111
    assert first["area"] == 57.0 * 51.0


def test_dota_difficult_ignore_makes_crowd_regions(shared_data):
    d = shared_data / "dota_devkit_example"
    result = convert(
        "dota", d / "labelTxt", images=d / "images", options=Options(difficult="ignore")
    )
    crowd = [a for a in result.coco["annotations"] if a["iscrowd"]]
    assert len(crowd) == 6 and all(a["difficult"] == 1 for a in crowd)


def test_cli_writes_validated_json_atomically(shared_data, tmp_path):
    d = shared_data / "dota_devkit_example"
    out = tmp_path / "out" / "dota.json"
    code, stdout, stderr = _cli(
        "--from", "dota", "--labels", str(d / "labelTxt"), "--images", str(d / "images"),
        "--output", str(out),
    )  # fmt: skip
    assert code == 0, stderr
    assert f"wrote {out}: 2 images (0 without objects), 600 objects" in stdout
    assert "dataset-stats --ann" in stdout
    data, report = load_coco_json(out, image_root=d / "images", strict=True, bad_area="error")
    assert not report.modified and report.annotations == 600
    assert [p.name for p in out.parent.iterdir()] == ["dota.json"]  # no temp file left


# ------------------------------------------------------------------------ YOLO, by hand


@pytest.fixture
def yolo_set(tmp_path):
    """Two 100x80 images, one labelled, one not; names 'a', 'b'."""
    _image(tmp_path / "images" / "one.png")
    _image(tmp_path / "images" / "sub" / "two.jpg")
    _write(tmp_path / "names.txt", "a\nb\n")
    _write(tmp_path / "labels" / "one.txt", "0 0.5 0.5 0.2 0.25\n1 0.1 0.1 0.3 0.1 0.3 0.3\n")
    return tmp_path


def _yolo(root: Path, **options):
    return convert(
        "yolo", root / "labels", images=root / "images", names=root / "names.txt",
        options=Options(**options),
    )  # fmt: skip


def test_yolo_boxes_by_hand(yolo_set):
    coco = _yolo(yolo_set).coco
    assert [(im["file_name"], im["width"], im["height"]) for im in coco["images"]] == [
        ("one.png", 100, 80),
        ("sub/two.jpg", 100, 80),  # no label file: an image without objects
    ]
    box, poly = coco["annotations"]
    # centre (50, 40), size 20x20
    assert box["bbox"] == [40.0, 30.0, 20.0, 20.0] and box["category_id"] == 1
    # polygon (10, 8), (30, 8), (30, 24): hull 20x16, kept as segmentation
    assert poly["bbox"] == [10.0, 8.0, 20.0, 16.0] and poly["category_id"] == 2
    assert poly["segmentation"] == [[10.0, 8.0, 30.0, 8.0, 30.0, 24.0]]
    assert [c["name"] for c in coco["categories"]] == ["a", "b"]


@pytest.mark.parametrize(
    "line, message",
    [
        ("0 0.5 0.5 0.2", "one.txt:2: malformed line '0 0.5 0.5 0.2': 4 fields"),
        ("0 0.5 0.5 0.2 0.2 0.9", "6 fields: a confidence?"),
        ("2 0.5 0.5 0.2 0.2", "one.txt:2: class id 2 is outside the names file, which lists 2"),
        ("0 0.5 0.5 x 0.2", "one.txt:2: field 4 = 'x' is not a number"),
        ("0 0.95 0.5 0.2 0.2", "one.txt:2: box [85, 32, 105, 48] (x0, y0, x1, y1) reaches 5.0 px"),
        ("0 50 40 20 20", "are not normalised"),
    ],
)
def test_yolo_bad_line_names_file_and_line(yolo_set, line, message):
    _write(yolo_set / "labels" / "one.txt", f"0 0.5 0.5 0.2 0.25\n{line}\n")
    with pytest.raises(ConversionError) as err:
        _yolo(yolo_set)
    assert message in str(err.value)


def test_yolo_box_outside_clipped_on_request_and_small_overshoot_clipped(yolo_set):
    _write(yolo_set / "labels" / "one.txt", "0 0.95 0.5 0.2 0.2\n0 0.09 0.5 0.2 0.2\n")
    result = _yolo(yolo_set, outside="clip")
    far, near = result.coco["annotations"]
    assert far["bbox"] == [85.0, 32.0, 15.0, 16.0]  # reached 5 px out: clipped on request
    assert near["bbox"] == [0.0, 32.0, 19.0, 16.0]  # 1 px out, within the tolerance
    assert result.notes.count("boxes clipped to their image") == 2


def test_yolo_label_without_image(yolo_set):
    _write(yolo_set / "labels" / "three.txt", "0 0.5 0.5 0.2 0.2\n")
    with pytest.raises(
        ConversionError, match=r"three.txt: label file without an image: no three\.\*"
    ):
        _yolo(yolo_set)


def test_yolo_names_from_data_yaml_and_classes_txt_skipped(yolo_set):
    _write(yolo_set / "data.yaml", "names: {0: a, 1: b}\n")
    _write(yolo_set / "labels" / "classes.txt", "a\nb\n")  # LabelImg's names file
    result = convert(
        "yolo", yolo_set / "labels", images=yolo_set / "images", names=yolo_set / "data.yaml"
    )
    assert [c["name"] for c in result.coco["categories"]] == ["a", "b"]
    assert result.notes.count("names files in the labels folder, not read as labels") == 1


def test_yolo_export_by_hand(tmp_path):
    coco = {
        "images": [{"id": 7, "file_name": "sub/x.jpg", "width": 200, "height": 100}],
        "categories": [{"id": 5, "name": "late"}, {"id": 2, "name": "early"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 5, "bbox": [20, 10, 40, 30], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [0, 0, 10, 10], "iscrowd": 1},
        ],
    }
    notes = write_yolo(coco, tmp_path)
    # category ids in sorted order: 2 -> 0, 5 -> 1; centre (40, 25) of 200x100
    assert (tmp_path / "sub" / "x.txt").read_text() == "1 0.200000 0.250000 0.200000 0.300000\n"
    assert (tmp_path / "classes.names").read_text() == "early\nlate\n"
    assert notes.count("ignore regions left out (YOLO has none)") == 1


# ------------------------------------------------------------------------- VOC, by hand

VOC = """<annotation>
  <filename>{filename}</filename>
  <size><width>{w}</width><height>80</height><depth>3</depth></size>
  <object>
    <name>dog</name>
    <difficult>0</difficult>
    <bndbox><xmin>10</xmin><ymin>20</ymin><xmax>30</xmax><ymax>60</ymax></bndbox>
  </object>
  <object>
    <name>{second}</name>
    <difficult>1</difficult>
    <bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>9</ymax></bndbox>
  </object>
</annotation>
"""


def _voc(tmp_path, filename="a.jpg", w=100, second="cat", **kw):
    _image(tmp_path / "images" / "a.png")
    _write(tmp_path / "xml" / "a.xml", VOC.format(filename=filename, w=w, second=second))
    return convert("voc", tmp_path / "xml", images=tmp_path / "images", **kw)


def test_voc_stale_filename_takes_the_xml_stem(tmp_path):
    result = _voc(tmp_path, filename="old_name.jpg")
    assert result.coco["images"][0]["file_name"] == "a.png"
    assert result.notes.count("stale <filename>: took the image with the XML's stem") == 1
    assert "'old_name.jpg' is not under" in "\n".join(result.notes.lines())
    dog, cat = result.coco["annotations"]
    assert dog["bbox"] == [10.0, 20.0, 20.0, 40.0] and dog["difficult"] == 0
    assert [c["name"] for c in result.coco["categories"]] == ["cat", "dog"]  # sorted
    assert cat["category_id"] == 1 and cat["iscrowd"] == 0


def test_voc_options(tmp_path):
    one_based = _voc(tmp_path, options=Options(voc_one_based=True, difficult="ignore"))
    dog, cat = one_based.coco["annotations"]
    assert dog["bbox"] == [9.0, 19.0, 21.0, 41.0]  # pixels 10..30 inclusive
    assert cat["iscrowd"] == 1
    dropped = convert(
        "voc", tmp_path / "xml", images=tmp_path / "images", options=Options(difficult="drop")
    )
    assert len(dropped.coco["annotations"]) == 1


def test_voc_errors_name_the_line(tmp_path):
    _write(tmp_path / "names.txt", "dog\n")
    with pytest.raises(ConversionError, match=r"a\.xml:9: class 'cat' is not in the names file"):
        _voc(tmp_path, names=tmp_path / "names.txt")
    with pytest.raises(ConversionError, match=r"<size> 120x80 differs from the image"):
        _voc(tmp_path, w=120)
    _write(tmp_path / "xml" / "a.xml", "<annotation>\n<object>\n</annotation>\n")
    with pytest.raises(ConversionError, match=r"a\.xml:3: malformed XML \(mismatched tag"):
        convert("voc", tmp_path / "xml", images=tmp_path / "images")


def test_voc_without_images_uses_the_xml(tmp_path):
    _write(tmp_path / "xml" / "a.xml", VOC.format(filename="a.jpg", w=100, second="cat"))
    coco = convert("voc", tmp_path / "xml").coco
    assert coco["images"] == [{"id": 1, "file_name": "a.jpg", "width": 100, "height": 80}]


# -------------------------------------------------------------------- VisDrone, by hand


def _visdrone(tmp_path, text: str, **options):
    _image(tmp_path / "images" / "0001.jpg")
    _write(tmp_path / "annotations" / "0001.txt", text)
    return convert(
        "visdrone", tmp_path / "annotations", images=tmp_path / "images", options=Options(**options)
    )


def test_visdrone_ignore_regions(tmp_path):
    text = (
        "10,20,30,40,1,4,0,1\n"  # a car
        "0,0,50,50,0,0,0,0\n"  # ignored region: one crowd per category
        "60,10,5,6,0,1,0,0\n"  # score 0: an ignored pedestrian
        "70,30,10,10,1,11,0,0,\n"  # others (trailing comma as some files have)
    )
    coco = _visdrone(tmp_path, text).coco
    anns = coco["annotations"]
    car = anns[0]
    assert car["bbox"] == [10.0, 20.0, 30.0, 40.0] and car["category_id"] == 4
    assert car["iscrowd"] == 0 and car["occlusion"] == 1
    region = [a for a in anns if a["bbox"] == [0.0, 0.0, 50.0, 50.0]]
    assert sorted(a["category_id"] for a in region) == list(range(1, 11))
    assert all(a["iscrowd"] == 1 for a in region)
    person = [a for a in anns if a["bbox"] == [60.0, 10.0, 5.0, 6.0]]
    assert [(a["category_id"], a["iscrowd"]) for a in person] == [(1, 1)]
    others = [a for a in anns if a["bbox"] == [70.0, 30.0, 10.0, 10.0]]
    assert len(others) == 10 and all(a["iscrowd"] for a in others)  # default: ignore
    assert len(anns) == 1 + 10 + 1 + 10

    kept = _visdrone(tmp_path, text, others="keep").coco
    assert kept["categories"][-1] == {"id": 11, "name": "others", "supercategory": ""}
    assert [a["category_id"] for a in kept["annotations"] if a["bbox"][0] == 70.0] == [11]
    dropped = _visdrone(tmp_path, text, others="drop").coco
    assert not [a for a in dropped["annotations"] if a["bbox"][0] == 70.0]


def test_visdrone_ignore_region_scores_like_pycocotools_crowd(tmp_path):
    """A detection of any class on a category-0 region is neither a hit nor a false positive:
    the best-scored bus sits in the region, the real bus is found second; without the region's
    bus copy that first detection would halve the bus AP."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    text = "10,20,30,40,1,4,0,0\n50,40,40,30,0,0,0,0\n5,65,20,10,1,9,0,0\n"
    coco = _visdrone(tmp_path, text).coco
    gt_file = write_coco(coco, tmp_path / "gt.json")
    dets = [
        {"image_id": 1, "category_id": 4, "bbox": [10, 20, 30, 40], "score": 0.9},
        {"image_id": 1, "category_id": 9, "bbox": [55, 45, 10, 10], "score": 0.9},  # in region
        {"image_id": 1, "category_id": 9, "bbox": [5, 65, 20, 10], "score": 0.8},
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_file))
        ev = COCOeval(gt, gt.loadRes(dets), "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)  # car and bus both perfect


def test_visdrone_malformed_line(tmp_path):
    with pytest.raises(ConversionError, match=r"0001\.txt:2: malformed line '1,2,3,4,1,4,0': 7"):
        _visdrone(tmp_path, "10,20,30,40,1,4,0,1\n1,2,3,4,1,4,0\n")
    with pytest.raises(ConversionError, match=r"0001\.txt:1: category 12 is not a VisDrone"):
        _visdrone(tmp_path, "10,20,30,40,1,12,0,1\n")


# ------------------------------------------------------------------ TinyPerson, AI-TOD


def _tinyperson_json(tmp_path: Path, **image_extra) -> Path:
    anns = [
        {"bbox": [10, 10, 5, 8], "category_id": 1, "ignore": False, "uncertain": False},
        {"bbox": [30, 10, 6, 6], "category_id": 2, "ignore": True, "logo": True},
        {"bbox": [50, 10, 4, 4], "category_id": 2, "ignore": False, "uncertain": True},
        {"bbox": [70, 10, 4, 4], "category_id": 1, "ignore": False, "logo": True},
    ]
    data = {
        "type": "instance",
        "images": [
            {
                "id": 0,
                "file_name": "labeled_images/x.jpg",
                "width": 100,
                "height": 80,
                **image_extra,
            }
        ],
        "annotations": [
            {"id": i, "image_id": 0, "area": a["bbox"][2] * a["bbox"][3], "iscrowd": 0, **a}
            for i, a in enumerate(anns)
        ],
        "categories": [
            {"id": 1, "name": "sea_person", "supercategory": "person"},
            {"id": 2, "name": "earth_person", "supercategory": "person"},
        ],
    }
    return _write(tmp_path / "tiny.json", json.dumps(data))


def test_tinyperson_flags_become_ignore_regions(tmp_path):
    coco = convert("tinyperson", _tinyperson_json(tmp_path)).coco
    assert coco["categories"] == [{"id": 1, "name": "person", "supercategory": ""}]
    assert coco["images"][0]["id"] == 0  # image ids kept
    # ignore and uncertain are ignore regions; logo alone is not (the benchmark's rule)
    assert [(a["bbox"][0], a["iscrowd"], a["category_id"]) for a in coco["annotations"]] == [
        (10.0, 0, 1),
        (30.0, 1, 1),
        (50.0, 1, 1),
        (70.0, 0, 1),
    ]
    assert coco["annotations"][1]["logo"] is True  # the flags stay as fields

    kept = convert(
        "tinyperson", _tinyperson_json(tmp_path), options=Options(tinyperson_classes="keep")
    )
    regions = [a for a in kept.coco["annotations"] if a["iscrowd"]]
    assert sorted((a["bbox"][0], a["category_id"]) for a in regions) == [
        (30.0, 1), (30.0, 2), (50.0, 1), (50.0, 2)
    ]  # fmt: skip
    logo = convert(
        "tinyperson", _tinyperson_json(tmp_path), options=Options(ignore_flags=("logo",))
    )
    assert [a["iscrowd"] for a in logo.coco["annotations"]] == [0, 1, 0, 1]


def test_tinyperson_refusals(tmp_path):
    with pytest.raises(ConversionError, match="did you mean 'uncertain'"):
        convert(
            "tinyperson", _tinyperson_json(tmp_path), options=Options(ignore_flags=("uncertian",))
        )
    with pytest.raises(ConversionError, match="'corner'"):
        convert("tinyperson", _tinyperson_json(tmp_path, corner=[0, 0, 100, 80]))


def test_aitod_checked_like_any_coco(tmp_path):
    data = {
        "images": [{"id": 3, "file_name": "t.png", "width": 100, "height": 80}],
        "annotations": [
            {
                "id": 1,
                "image_id": 3,
                "category_id": 6,
                "bbox": [1, 2, 3, 4],
                "area": 12,
                "iscrowd": 0,
            }
        ],
        "categories": [{"id": 6, "name": "vehicle"}],
    }
    path = _write(tmp_path / "aitod.json", json.dumps(data))
    result = convert("aitod", path)
    assert result.coco["annotations"][0]["bbox"] == [1, 2, 3, 4]
    assert result.notes.count("categories differ from AI-TOD's 8 classes") == 1
    with pytest.raises(ConversionError, match="images are not under"):
        convert("aitod", path, images=tmp_path)
    data["annotations"][0].update(bbox=[90, 2, 30, 4], area=120)
    _write(path, json.dumps(data))
    with pytest.raises(
        ConversionError, match=r"aitod\.json: annotation 1 \(image 3\): box .* 20\.0 px"
    ):
        convert("aitod", path)
    assert (
        convert("aitod", path, options=Options(outside="clip")).notes.count(
            "repaired by validation"
        )
        == 1
    )


# ---------------------------------------------------------------------------- the CLI


def test_cli_errors_are_one_line(tmp_path, yolo_set):
    code, _, err = _cli(
        "--from", "dota", "--others", "keep", "--labels", str(tmp_path), "--output", "x.json"
    )  # fmt: skip
    assert code == 2 and err == "error: --others applies to --from visdrone, not dota\n"
    _write(yolo_set / "labels" / "one.txt", "5 0.5 0.5 0.1 0.1\n")
    out = tmp_path / "never.json"
    code, _, err = _cli(
        "--from", "yolo", "--labels", str(yolo_set / "labels"), "--images", str(yolo_set / "images"),
        "--names", str(yolo_set / "names.txt"), "--output", str(out),
    )  # fmt: skip
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "one.txt:1: class id 5 is outside the names file" in err and not out.exists()


def test_cli_to_yolo(tmp_path, yolo_set):
    gt = write_coco(_yolo(yolo_set).coco, tmp_path / "gt.json")
    code, stdout, err = _cli("--to", "yolo", "--labels", str(gt), "--output", str(tmp_path / "y"))
    assert code == 0, err
    assert (
        (tmp_path / "y" / "one.txt")
        .read_text()
        .startswith("0 0.500000 0.500000 0.200000 0.250000\n")
    )
    assert (tmp_path / "y" / "sub" / "two.txt").read_text() == ""


def test_tool_is_the_shim_and_command_is_registered():
    from detector.cli.main import COMMANDS

    assert COMMANDS["convert"][0] == "detector.cli.convert"
    assert "from detector.cli.convert import main" in (ROOT / "tools" / "convert.py").read_text()


# ------------------------------------------------------------------------------ configs

FORMAT_CONFIGS = sorted((ROOT / "configs" / "formats").glob("*.yaml"))


def test_a_config_per_format_family():
    assert {p.stem for p in FORMAT_CONFIGS} == {
        "yolo_voc",
        "visdrone",
        "dota",
        "aitod",
        "tinyperson",
    }


@pytest.mark.parametrize("path", FORMAT_CONFIGS, ids=[p.stem for p in FORMAT_CONFIGS])
def test_format_config_trains_from_a_converted_set(path):
    from detector.config import load_config

    cfg = load_config(path)
    assert cfg.data.source == "coco" and cfg.data.train_ann.endswith(".json")
    # the evaluation's largest maxDets is not cut by the model's caps
    assert max(cfg.eval.max_dets) <= cfg.model.roi.detections_per_img
    assert cfg.model.roi.detections_per_img <= cfg.model.rpn.post_nms_top_n_test
    header = path.read_text().split("_base_:")[0]
    assert "smalldet convert --from" in header
    assert f"smalldet train --config configs/formats/{path.name}" in header
    assert f"configs/formats/{path.name}" in (ROOT / "docs" / "datasets.md").read_text()


def test_dota_config_trains_from_the_converted_example(shared_data, tmp_path):
    """The training set the DOTA config builds from a converted set: difficult objects as
    ignore regions are no training targets."""
    from detector.config import load_config
    from detector.data import build_dataset

    d = shared_data / "dota_devkit_example"
    out = tmp_path / "dota.json"
    code, _, err = _cli(
        "--from", "dota", "--labels", str(d / "labelTxt"), "--images", str(d / "images"),
        "--difficult", "ignore", "--output", str(out),
    )  # fmt: skip
    assert code == 0, err
    cfg = load_config(
        ROOT / "configs" / "formats" / "dota.yaml",
        [f"data.train_images={d / 'images'}", f"data.train_ann={out}",
         f"data.builtin.cache_dir={tmp_path / 'cache'}"],
    )  # fmt: skip
    dataset = build_dataset(cfg, "train")
    want = json.loads((d / "annotations_coco_hbb.json").read_text())
    easy = Counter(a["image_id"] for a in want["annotations"] if not a["difficult"])
    assert dataset.num_classes == 15 and len(dataset) == 2
    assert [len(dataset.raw_target(i)["boxes"]) for i in range(2)] == [easy[1], easy[2]]


def test_help_states_the_tolerance_the_code_uses(capsys):
    from detector.data.formats.common import OUTSIDE_TOLERANCE_PX

    with pytest.raises(SystemExit):
        convert_main(["--help"])
    assert f"more than {OUTSIDE_TOLERANCE_PX:g} px outside its image" in capsys.readouterr().out
