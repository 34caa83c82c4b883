"""Every bad input named in the data issue gives a clear message (file, id, field, fix)."""

from __future__ import annotations

import copy
import json
import logging
import math

import numpy as np
import pytest
from PIL import Image

from detector.data import CocoDataset, DatasetError, load_coco_json, validate_coco


def _good() -> dict:
    return {
        "images": [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.png", "width": 40, "height": 30},
            {"id": 3, "file_name": "c.png", "width": 40, "height": 30},  # no annotations
        ],
        "annotations": [
            {
                "id": 10,
                "image_id": 1,
                "category_id": 5,
                "bbox": [2, 3, 10, 8],
                "area": 80,
                "iscrowd": 0,
            },
            {
                "id": 11,
                "image_id": 1,
                "category_id": 7,
                "bbox": [20, 10, 6, 6],
                "area": 36,
                "iscrowd": 0,
            },
            {
                "id": 12,
                "image_id": 2,
                "category_id": 7,
                "bbox": [5, 5, 4, 4],
                "area": 16,
                "iscrowd": 0,
            },
        ],
        "categories": [{"id": 5, "name": "cat"}, {"id": 7, "name": "dog"}],
    }


def _write(tmp_path, data, images=True):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(data))
    root = tmp_path / "images"
    root.mkdir(exist_ok=True)
    if images:
        for im in data["images"]:
            arr = np.full((im["height"], im["width"], 3), 100, np.uint8)
            Image.fromarray(arr).save(root / im["file_name"])
    return root, ann


def test_clean_file_has_empty_report(tmp_path):
    _, ann = _write(tmp_path, _good(), images=False)
    data, rep = load_coco_json(ann)
    assert len(data["annotations"]) == 3 and not rep.modified and rep.messages == []
    assert rep.empty_images == 1


def test_malformed_json_reports_line_and_column(tmp_path):
    ann = tmp_path / "broken.json"
    ann.write_text('{"images": [],\n "annotations": [,]}')
    with pytest.raises(DatasetError, match=r"broken\.json: malformed JSON at line 2, column") as e:
        load_coco_json(ann)
    assert "Fix:" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(DatasetError, match="nope.json: annotation file not found"):
        load_coco_json(tmp_path / "nope.json")


@pytest.mark.parametrize("key", ["images", "annotations", "categories"])
def test_missing_top_level_key(tmp_path, key):
    data = _good()
    del data[key]
    _, ann = _write(tmp_path, data, images=False)
    with pytest.raises(DatasetError, match=f"ann.json: missing top-level key '{key}'") as e:
        load_coco_json(ann)
    assert f'"{key}": []' in str(e.value)


def test_results_list_instead_of_gt(tmp_path):
    with pytest.raises(DatasetError, match="top level is a JSON list.*results file"):
        validate_coco([{"image_id": 1}], "res.json")


def test_duplicate_image_ids():
    data = _good()
    data["images"][1]["id"] = 1
    with pytest.raises(
        DatasetError, match=r"x.json: duplicate image id 1 \(files 'a.png' and 'b.png'\).*Fix"
    ):
        validate_coco(data, "x.json")


def test_missing_image_field():
    data = _good()
    del data["images"][2]["width"]
    with pytest.raises(DatasetError, match="image id 3: missing field 'width'"):
        validate_coco(data, "x.json")


def test_annotation_unknown_image():
    data = _good()
    data["annotations"][2]["image_id"] = 99
    with pytest.raises(
        DatasetError, match=r"annotation 12: field 'image_id' = 99 .*Fix: add the image"
    ):
        validate_coco(data, "x.json")


def test_annotation_unknown_category():
    data = _good()
    data["annotations"][0]["category_id"] = 3
    with pytest.raises(
        DatasetError,
        match=r"annotation 10: field 'category_id' = 3 is not in 'categories' \(ids \[5, 7\]\)",
    ):
        validate_coco(data, "x.json")


def test_bad_bbox_shape():
    data = _good()
    data["annotations"][1]["bbox"] = [1, 2, 3]
    with pytest.raises(
        DatasetError,
        match=r"annotation 11 \(image 1, 'a.png'\): field 'bbox' = \[1, 2, 3\] must be a list of 4",
    ):
        validate_coco(data, "x.json")


@pytest.mark.parametrize("bbox", [[2, 3, 0, 8], [2, 3, 10, -1]])
def test_degenerate_box_dropped_or_strict_error(bbox, caplog):
    data = _good()
    data["annotations"][0]["bbox"] = bbox
    with caplog.at_level(logging.WARNING):
        out, rep = validate_coco(data, "x.json")
    assert rep.dropped_degenerate == 1 and len(out["annotations"]) == 2
    assert "dropped 1 annotations with width or height <= 0" in caplog.text
    with pytest.raises(
        DatasetError,
        match=r"annotation 10 \(image 1, 'a.png'\): field 'bbox' = .* width or height <= 0.*data.strict=false",
    ):
        validate_coco(data, "x.json", strict=True)


def test_nan_box_dropped_or_strict_error(tmp_path):
    data = _good()
    data["annotations"][2]["bbox"] = [1.0, math.nan, 3.0, 3.0]
    _, ann = _write(tmp_path, data, images=False)  # json writes NaN, as many exporters do
    out, rep = load_coco_json(ann)
    assert rep.dropped_nan == 1 and [a["id"] for a in out["annotations"]] == [10, 11]
    assert "NaN" in rep.messages[0]
    with pytest.raises(
        DatasetError, match=r"annotation 12 \(image 2, 'b.png'\): field 'bbox' = .*NaN or infinity"
    ):
        load_coco_json(ann, strict=True)


def test_box_outside_image_is_clipped_and_counted():
    data = _good()
    data["annotations"][1]["bbox"] = [35, -2, 10, 6]  # right edge 45 > 40, top < 0
    data["annotations"][2]["bbox"] = [50, 5, 4, 4]  # entirely outside: dropped
    out, rep = validate_coco(data, "x.json")
    assert rep.clipped == 1 and rep.dropped_degenerate == 1
    assert out["annotations"][1]["bbox"] == [35.0, 0.0, 5.0, 4.0]
    assert any("clipped 1 boxes" in m for m in rep.messages)
    assert data["annotations"][1]["bbox"] == [35, -2, 10, 6]  # input untouched


def test_missing_area_and_iscrowd_are_filled():
    data = _good()
    del data["annotations"][0]["area"]
    del data["annotations"][1]["iscrowd"]
    out, rep = validate_coco(data, "x.json")
    assert rep.area_missing == 1 and rep.iscrowd_missing == 1
    assert out["annotations"][0]["area"] == 80 and out["annotations"][1]["iscrowd"] == 0


def test_bad_area_real_file(shared_data, caplog):
    """sahi_visdrone_pair/dataset.json has the whole image's area on every box."""
    ann = shared_data / "coco_eval_reference" / "sahi_visdrone_pair" / "dataset.json"
    with caplog.at_level(logging.WARNING):
        data, rep = load_coco_json(ann)
    assert rep.area_bad == 249 and rep.area_recomputed == 0
    assert "dataset.json: 249 of 249 annotations have an 'area' that disagrees" in caplog.text
    assert "annotation 1: area 1040400" in caplog.text and "data.bad_area=recompute" in caplog.text
    fixed, rep2 = load_coco_json(ann, bad_area="recompute")
    assert rep2.area_recomputed == 249 and rep2.modified
    reference = json.loads((ann.parent / "dataset_area_fixed.json").read_text())
    ref_area = {a["id"]: a["area"] for a in reference["annotations"]}
    assert all(a["area"] == pytest.approx(ref_area[a["id"]]) for a in fixed["annotations"])
    with pytest.raises(DatasetError, match="249 of 249 .* Fix: set data.bad_area=recompute"):
        load_coco_json(ann, bad_area="error")


def test_area_explained_by_polygon_is_not_flagged():
    data = _good()
    # a thin diagonal polygon: its area is far below w*h, and the area field matches it
    data["annotations"][0].update(area=8.5, segmentation=[[2, 3, 12, 11, 11, 11, 2, 4]])
    _, rep = validate_coco(data, "x.json")
    assert rep.area_bad == 0


def test_recomputed_area_is_written_to_a_cleaned_gt(tmp_path):
    data = _good()
    for a in data["annotations"]:
        a["area"] = 40 * 30
    root, ann = _write(tmp_path, data)
    ds = CocoDataset(root, ann, bad_area="recompute", cleaned_dir=tmp_path / "clean")
    assert ds.ann_file != ann and ds.ann_file.parent == tmp_path / "clean"
    cleaned = json.loads(ds.ann_file.read_text())
    assert [a["area"] for a in cleaned["annotations"]] == [80, 36, 16]
    assert ds.coco.anns[10]["area"] == 80


def test_path_traversal_refused(tmp_path):
    data = _good()
    data["images"][0]["file_name"] = "../../etc/passwd"
    root, ann = _write(tmp_path, copy.deepcopy(_good()))
    ann.write_text(json.dumps(data))
    with pytest.raises(
        DatasetError,
        match=r"image 1: field 'file_name' = '../../etc/passwd' resolves to .* outside the image root",
    ):
        CocoDataset(root, ann)


def test_missing_image_named_at_first_read(tmp_path):
    root, ann = _write(tmp_path, _good())
    (root / "b.png").unlink()
    ds = CocoDataset(root, ann)  # no check: construction is cheap
    with pytest.raises(DatasetError, match=r"image 2 \(file '.*b.png'\): file not found"):
        ds[1]


def test_corrupt_image_named_at_first_read(tmp_path):
    root, ann = _write(tmp_path, _good())
    (root / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    ds = CocoDataset(root, ann)
    with pytest.raises(
        DatasetError, match=r"image 1 \(file '.*a.png'\): cannot read the image: .*Fix: re-download"
    ):
        ds[0]


def test_check_images_lists_every_bad_image(tmp_path):
    root, ann = _write(tmp_path, _good())
    (root / "a.png").write_bytes(b"garbage")
    (root / "c.png").unlink()
    with pytest.raises(DatasetError, match=r"2 of 3 images cannot be used") as e:
        CocoDataset(root, ann, check_images=True)
    assert "a.png" in str(e.value) and "c.png" in str(e.value)


def test_image_size_mismatch(tmp_path):
    root, ann = _write(tmp_path, _good())
    Image.fromarray(np.zeros((30, 41, 3), np.uint8)).save(root / "b.png")
    ds = CocoDataset(root, ann)
    with pytest.raises(
        DatasetError,
        match=r"image 2 .*decoded size 41x30 differs from the JSON width x height = 40x30",
    ):
        ds[1]


def test_empty_images_kept_for_eval_configurable_for_train(tmp_path):
    root, ann = _write(tmp_path, _good())
    assert CocoDataset(root, ann).image_ids == [1, 2, 3]
    assert CocoDataset(root, ann, train=True).image_ids == [1, 2]
    assert CocoDataset(root, ann, train=True, keep_empty=True).image_ids == [1, 2, 3]


def test_bad_image_in_worker_process_is_a_dataset_error(tmp_path):
    """Not a bare PIL traceback deep in a worker: the main process gets the same message."""
    from torch.utils.data import DataLoader

    from detector.data import collate

    root, ann = _write(tmp_path, _good())
    (root / "a.png").write_bytes(b"not a png")
    loader = DataLoader(CocoDataset(root, ann), batch_size=1, num_workers=1, collate_fn=collate)
    with pytest.raises(DatasetError, match=r"image 1 \(file '.*a.png'\): cannot read the image"):
        list(loader)


# ------------------------------------------- malformed records: a message, never a traceback


@pytest.mark.parametrize("value", [40.5, 0, -3, True])
def test_image_size_must_be_whole_pixels(value):
    data = _good()
    data["images"][0]["width"] = value
    with pytest.raises(
        DatasetError,
        match=r"x.json: image 1 \('a.png'\): field 'width' = .* must be a positive whole number",
    ):
        validate_coco(data, "x.json")


def test_integral_float_size_is_accepted():
    data = _good()
    data["images"][0]["width"] = 40.0  # some exporters write floats
    out, _ = validate_coco(data, "x.json")
    assert out["images"][0]["width"] == 40.0


@pytest.mark.parametrize("second", ["a.png", "./a.png", "sub/../a.png"])
def test_duplicate_file_names(second):
    data = _good()
    data["images"][1]["file_name"] = second
    with pytest.raises(
        DatasetError,
        match=r"x.json: images 1 and 2 have the same 'file_name' .*Fix: list each image once",
    ):
        validate_coco(data, "x.json")


@pytest.mark.parametrize("value", [[10], {"a": 1}, "10", 10.0, None, True])
def test_annotation_id_must_be_an_integer(value):
    data = _good()
    data["annotations"][0]["id"] = value
    with pytest.raises(
        DatasetError, match=r"x.json: annotation #0: field 'id' = .* must be an integer\. Fix"
    ):
        validate_coco(data, "x.json")


@pytest.mark.parametrize("key", ["image_id", "category_id"])
@pytest.mark.parametrize("value", [[1], {"id": 1}, 1.0, "1", None])
def test_annotation_references_must_be_integers(key, value):
    data = _good()
    data["annotations"][1][key] = value
    with pytest.raises(
        DatasetError,
        match=rf"x.json: annotation 11: field '{key}' = .* must be an integer, the 'id' of an? "
        r"(image|category)\. Fix",
    ):
        validate_coco(data, "x.json")


@pytest.mark.parametrize("value", ["yes", "0", None, 2, -1, 0.5])
def test_iscrowd_must_be_0_or_1(value):
    data = _good()
    data["annotations"][2]["iscrowd"] = value
    with pytest.raises(
        DatasetError,
        match=r"annotation 12 \(image 2, 'b.png'\): field 'iscrowd' = .* must be 0 or 1\. Fix",
    ):
        validate_coco(data, "x.json")


def test_iscrowd_bool_is_accepted():
    data = _good()
    data["annotations"][2]["iscrowd"] = True
    out, _ = validate_coco(data, "x.json")
    assert out["annotations"][2]["iscrowd"] is True


@pytest.mark.parametrize("name", ["/etc/passwd", ".", "sub/../..", "a\0.png"])
def test_file_name_outside_root_or_invalid(tmp_path, name):
    data = _good()
    data["images"][1]["file_name"] = name
    with pytest.raises(DatasetError, match=r"x.json: image 2: field 'file_name' = .*Fix: "):
        validate_coco(data, "x.json", image_root=tmp_path)


def test_symlinked_image_files_are_accepted(tmp_path):
    """A dataset whose image folder holds symlinks into a shared store is not path traversal."""
    store = tmp_path / "store"
    store.mkdir()
    root, ann = _write(store, _good())
    linked = tmp_path / "linked"
    linked.mkdir()
    for im in _good()["images"]:
        (linked / im["file_name"]).symlink_to(root / im["file_name"])
    ds = CocoDataset(linked, ann, check_images=True)
    assert ds.image_path(1) == linked.resolve() / "a.png"
    assert ds[0][0].shape == (3, 30, 40)
