"""Bad input, pycocotools pitfalls and bin checks."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from detector.evaluation import EvalInputError, evaluate, get_bins
from detector.utils.bins import parse_edges


def _gt(with_area=True, with_crowd=True):
    anns = []
    boxes = [[10, 10, 20, 20], [100, 100, 60, 60], [300, 300, 150, 120], [5, 200, 6, 6]]
    for i, bb in enumerate(boxes):
        a = {"id": i + 1, "image_id": 1 + i % 2, "category_id": 1 + i % 2, "bbox": bb}
        if with_area:
            a["area"] = bb[2] * bb[3]
        if with_crowd:
            a["iscrowd"] = 0
        anns.append(a)
    return {
        "images": [{"id": 1}, {"id": 2}, {"id": 3}],
        "annotations": anns,
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}],
    }


def _res():
    return [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 0.9,
        }
        for a in _gt()["annotations"]
    ]


def _write(tmp_path, name, obj):
    p = tmp_path / name
    p.write_text(json.dumps(obj))
    return p


@pytest.mark.parametrize(
    "field,value,needle",
    [
        ("image_id", 99, "image_id 99"),
        ("category_id", 7, "category_id 7"),
        ("score", float("nan"), "score"),
        ("score", float("inf"), "score"),
        ("score", -0.5, "score"),
        ("bbox", [1, 2, 3], "bbox"),
        ("bbox", [1, 2, -3, 4], "width and height"),
        ("bbox", ["a", 2, 3, 4], "bbox"),
        ("bbox", [1, 2, float("nan"), 4], "finite"),
        # strings, booleans and fractional ids are refused, not cast (numpy would cast them)
        ("score", "0.9", "'score' '0.9' is a string"),
        ("score", True, "'score' True is a boolean"),
        ("bbox", ["1", "2", "3", "4"], "'1' is a string"),
        ("bbox", [1, 2, True, 4], "True is a boolean"),
        ("image_id", 1.5, "'image_id' 1.5 is not a whole number"),
        ("image_id", "1", "'image_id' '1' is a string"),
        ("image_id", True, "'image_id' True is a boolean"),
        ("category_id", True, "'category_id' True is a boolean"),
        ("category_id", "1", "'category_id' '1' is a string"),
        ("category_id", "car", "'category_id' 'car' is a string"),
    ],
)
def test_bad_result_records_name_file_and_record(tmp_path, field, value, needle):
    res = _res()
    res[2][field] = value
    gt = _write(tmp_path, "gt.json", _gt())
    dt = tmp_path / "dt.json"
    dt.write_text(json.dumps(res))  # json writes NaN/Infinity, which Python reads back
    with pytest.raises(EvalInputError) as err:
        evaluate(gt, dt)
    msg = str(err.value)
    assert "dt.json" in msg and "[2]" in msg and needle in msg


def test_missing_key_and_not_a_list(tmp_path):
    gt = _write(tmp_path, "gt.json", _gt())
    res = _res()
    del res[1]["score"]
    with pytest.raises(EvalInputError, match=r"record \[1\] has no 'score'"):
        evaluate(gt, _write(tmp_path, "a.json", res))
    with pytest.raises(EvalInputError, match="must be a JSON list"):
        evaluate(gt, _write(tmp_path, "b.json", {"image_id": 1}))
    with pytest.raises(EvalInputError, match="nope.json: results file not found"):
        evaluate(gt, tmp_path / "nope.json")


def test_empty_results_give_zeros(tmp_path):
    r = evaluate(_gt(), [])
    assert r.summary["AP"] == 0.0 and r.summary["AR@100"] == 0.0
    assert r.summary["AP_small"] == 0.0
    assert any("empty" in w for w in r.warnings)
    json.dumps(r.to_dict())
    r.markdown()


def test_gt_without_area_or_iscrowd_is_filled_with_warning():
    full = evaluate(_gt(), _res(), errors=False)
    with pytest.warns(UserWarning, match="no 'area'"):
        r1 = evaluate(_gt(with_area=False), _res(), errors=False)
    with pytest.warns(UserWarning, match="no 'iscrowd'"):
        r2 = evaluate(_gt(with_crowd=False), _res(), errors=False)
    assert r1.summary == full.summary == r2.summary
    # the pycocotools backend gets the same filled-in fields instead of a KeyError
    with pytest.warns(UserWarning):
        r3 = evaluate(_gt(with_area=False), _res(), errors=False, backend="pycocotools")
    assert np.array_equal(r3.precision, full.precision)


def test_bad_gt_records():
    gt = _gt()
    gt["annotations"][1]["bbox"] = [1, 2, 3]
    with pytest.raises(EvalInputError, match=r"annotations\[1\]"):
        evaluate(gt, [])
    with pytest.raises(EvalInputError, match="'categories'"):
        evaluate({"images": [], "annotations": []}, [])


def test_perfect_results_score_one_and_empty_bin_is_marked():
    r = evaluate(_gt(), _res(), bins="0,8,16,32,96,1000,inf")
    assert r.summary["AP"] == pytest.approx(1.0)
    assert r.summary["AP_1000-inf"] is None
    assert "1000-inf" in r.empty_bins()
    assert "no objects" in r.markdown()


def test_edges_are_checked():
    for bad in ("32", "0,32,16", "-1,8,inf", "0,8,x", "0,8,8"):
        with pytest.raises(ValueError):
            parse_edges(bad)
    with pytest.raises(ValueError, match="unknown size-bin preset"):
        get_bins("huge")
    names = [b.name for b in get_bins("aitod")]
    assert names == ["all", "verytiny", "tiny", "small", "medium", "large"]
    for preset in ("coco", "aitod", "soda", "tinyperson"):
        evaluate(_gt(), _res(), bins=preset, errors=False)


def test_max_dets_not_ending_in_100_and_dense_warning():
    r = evaluate(_gt(), _res(), max_dets=(1, 10, 100, 300, 1000), errors=False)
    assert "AR@1000" in r.summary and "AR_small@300" in r.summary
    gt = _gt()
    gt["annotations"] = [
        {
            "id": i + 1,
            "image_id": 1,
            "category_id": 1,
            "bbox": [i * 3, 0, 2, 2],
            "area": 4,
            "iscrowd": 0,
        }
        for i in range(12)
    ]
    res = [
        {"image_id": 1, "category_id": 1, "bbox": a["bbox"], "score": 1 - i / 100}
        for i, a in enumerate(gt["annotations"])
    ]
    with pytest.warns(UserWarning, match="densest image"):
        small = evaluate(gt, res, max_dets=(1, 5), errors=False)
    assert small.summary["AR@5"] == pytest.approx(5 / 12)
    big = evaluate(gt, res, max_dets=(1, 5, 20), errors=False)
    assert big.summary["AP"] == pytest.approx(1.0)


def test_arange_iou_thresholds_find_ap75():
    thrs = np.arange(0.5, 0.96, 0.05)
    assert not np.any(thrs == 0.75)  # the pycocotools summarize() trap
    r = evaluate(_gt(), _res(), iou_thrs=thrs, errors=False)
    assert r.summary["AP75"] == pytest.approx(1.0)


def test_custom_bins_keys_follow_pattern():
    r = evaluate(_gt(), _res(), bins="aitod", errors=False)
    for key in ("AP_tiny", "AP50_tiny", "AP75_tiny", "AR_tiny@100", "AP_verytiny"):
        assert key in r.summary
    assert not any(isinstance(v, float) and math.isnan(v) for v in r.summary.values())


def test_bin_names_must_be_unique_and_coco_object_accepted():
    from pycocotools.coco import COCO

    from detector.evaluation import SizeBin

    with pytest.raises(ValueError, match="unique"):
        evaluate(_gt(), _res(), bins=[SizeBin("s", 0, 8), SizeBin("s", 8, 16)])
    r = evaluate(_gt(), _res(), bins=[SizeBin("s", 0, 16), SizeBin("l", 16, math.inf)])
    assert list(r.per_bin) == ["all", "s", "l"]
    coco = COCO()
    coco.dataset = _gt()
    coco.createIndex()
    assert (
        evaluate(coco, _res(), errors=False).summary
        == evaluate(_gt(), _res(), errors=False).summary
    )


def test_first_bad_record_is_named_whatever_the_problem(tmp_path):
    res = _res()
    res[3]["score"] = "0.5"  # a type problem ...
    res[1]["image_id"] = 99  # ... after an unknown image: the earlier record is named
    with pytest.raises(EvalInputError, match=r"record \[1\]: image_id 99"):
        evaluate(_gt(), res)


def test_whole_valued_float_ids_are_read_as_integers_with_a_warning():
    """3.0 means 3 to pycocotools' dict lookups too, so it is converted, not refused."""
    res = _res()
    for r in res:
        r["image_id"], r["category_id"] = float(r["image_id"]), float(r["category_id"])
    with pytest.warns(UserWarning, match="whole-valued floats"):
        got = evaluate(_gt(), res, errors=False)
    assert got.summary == evaluate(_gt(), _res(), errors=False).summary
    assert any("whole-valued" in w for w in got.warnings)
    gt = _gt()
    gt["images"][0]["id"] = 1.0
    with pytest.warns(UserWarning, match=r"images\[0\]\.id"):
        assert evaluate(gt, _res(), errors=False).summary["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize(
    "where,value,needle",
    [
        ("categories", "1", r"categories\[0\]: 'id' '1' is a string"),
        ("categories", True, r"categories\[0\]: 'id' True is a boolean"),
        ("images", 2.5, r"images\[0\]: 'id' 2.5 is not a whole number"),
        ("annotations", "1", r"annotations\[0\] \(id 1\): 'image_id' '1' is a string"),
    ],
)
def test_bad_gt_ids(where, value, needle):
    gt = _gt()
    key = "image_id" if where == "annotations" else "id"
    gt[where][0][key] = value
    with pytest.raises(EvalInputError, match=needle):
        evaluate(gt, [])


def _string_id_pair():
    """Generated data with ids "img1".."img60": sorted as strings ("img10" < "img9"), with score
    ties across images, so the image order pycocotools uses decides the tie-breaks."""
    from detector.evaluation.synthetic import make_dataset

    gt, res = make_dataset(60, seed=11, n_cats=3, dets_per_image=25)
    for im in gt["images"]:
        im["id"] = f"img{im['id']}"
    for rec in (*gt["annotations"], *res):
        rec["image_id"] = f"img{rec['image_id']}"
    return gt, res


def test_string_image_ids_same_numbers_on_both_backends_and_pycocotools():
    import contextlib
    import copy
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt, res = _string_id_pair()
    fast = evaluate(copy.deepcopy(gt), copy.deepcopy(res), errors=False)
    ref = evaluate(copy.deepcopy(gt), copy.deepcopy(res), errors=False, backend="pycocotools")
    assert np.array_equal(fast.precision, ref.precision)
    assert np.array_equal(fast.recall, ref.recall)
    # and pycocotools itself, on the dicts as given
    coco = COCO()
    coco.dataset = copy.deepcopy(gt)
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
        ev = COCOeval(coco, coco.loadRes(copy.deepcopy(res)), "bbox")
        ev.evaluate()
        ev.accumulate()
    assert np.array_equal(fast.precision, ev.eval["precision"])
    assert fast.summary["AP"] > 0
    json.dumps(fast.to_dict())


@pytest.mark.parametrize("backend", ["fast", "pycocotools"])
def test_string_image_ids_refuse_integer_results_and_mixed_gt(backend):
    gt, res = _string_id_pair()
    res[4]["image_id"] = 4
    with pytest.raises(EvalInputError, match=r"record \[4\]: 'image_id' 4 is not a string"):
        evaluate(gt, res, backend=backend)
    res[4]["image_id"] = "img_unknown"
    with pytest.raises(EvalInputError, match=r"record \[4\]: image_id 'img_unknown' is not in"):
        evaluate(gt, res, backend=backend)
    gt["images"][3]["id"] = 3
    with pytest.raises(EvalInputError, match=r"images\[3\]: 'id' 3 is not a string"):
        evaluate(gt, [], backend=backend)


def test_evaluation_imports_and_runs_without_torch():
    """``detector.evaluation`` is the torch-free layer: it must import and evaluate with torch,
    the engine and the models all unimportable."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys, json\n"
        "for m in ('torch', 'torchvision', 'detector.engine', 'detector.models'):\n"
        "    sys.modules[m] = None\n"
        "import detector.evaluation\n"
        "from detector.evaluation.api import evaluate\n"
        f"gt, res = json.loads({json.dumps(json.dumps([_gt(), _res()]))})\n"
        "r = evaluate(gt, res)\n"
        "assert abs(r.summary['AP'] - 1.0) < 1e-9, r.summary\n"
        "assert detector.evaluation.evaluate is evaluate\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
