"""The official COCO reference numbers, on the fast and the pycocotools backend."""

from __future__ import annotations

import json

import numpy as np
import pytest

from detector.evaluation import evaluate
from detector.evaluation.summary import coco_stats


@pytest.fixture(scope="module")
def ref(shared_data):
    d = shared_data / "coco_eval_reference"
    return d, json.loads((d / "expected_stats.json").read_text())


@pytest.mark.parametrize("backend", ["fast", "pycocotools"])
def test_official_fake_bbox_numbers(ref, backend):
    d, exp = ref
    r = evaluate(d / exp["gt"], d / exp["bbox"]["dt"], backend=backend, errors=False)
    got = np.array(coco_stats(r.summary, r.bins))
    assert np.abs(got - np.array(exp["bbox"]["stats"])).max() <= 1e-12
    # the required flat JSON keys
    for key in ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR@1", "AR@10"]:
        assert key in r.to_dict()
    for key in ["AR@100", "AR_small@100", "AR_medium@100", "AR_large@100"]:
        assert key in r.to_dict()


def test_fast_arrays_equal_pycocotools_on_reference(ref):
    d, exp = ref
    for bins in ("coco", "aitod", "0,8,16,32,96,inf"):
        a = evaluate(d / exp["gt"], d / exp["bbox"]["dt"], bins=bins, errors=False)
        b = evaluate(
            d / exp["gt"], d / exp["bbox"]["dt"], bins=bins, errors=False, backend="pycocotools"
        )
        assert np.array_equal(a.precision, b.precision)
        assert np.array_equal(a.recall, b.recall)


def test_sahi_pair_bogus_area(ref):
    d, exp = ref
    pair = d / "sahi_visdrone_pair"
    want = exp["sahi_visdrone_pair"]
    for gt_name, key in (("dataset.json", "as_is"), ("dataset_area_fixed.json", "area_fixed")):
        with pytest.warns(UserWarning, match="densest image"):  # 169 GT in one image > 100
            r = evaluate(pair / gt_name, pair / "result.json", errors=False)
        got = coco_stats(r.summary, r.bins)
        assert np.allclose(got, want[key], atol=6e-4), (key, got)
    # as-is: no GT falls in small/medium, which is reported as "no objects", not as -1
    r = evaluate(pair / "dataset.json", pair / "result.json", max_dets="1,10,100,300")
    assert r.summary["AP_small"] is None and r.errors["small"]["status"] == "no objects"
    assert "small" in r.empty_bins()
    entry = next(b for b in r.to_dict()["bins"] if b["name"] == "small")
    assert entry["status"] == "no objects" and entry["AP"] is None


def test_dense_dota_image_needs_more_max_dets(shared_data):
    """DOTA P0706 has 536 boxes: GT fed back as detections is capped at maxDets=100."""
    path = shared_data / "dota_devkit_example" / "annotations_coco_hbb.json"
    gt = json.loads(path.read_text())
    res = [
        {
            "image_id": a["image_id"],
            "category_id": a["category_id"],
            "bbox": a["bbox"],
            "score": 1.0,
        }
        for a in gt["annotations"]
    ]
    with pytest.warns(UserWarning, match="densest image"):
        capped = evaluate(path, res, bins="aitod", errors=False)
    assert capped.summary["AP"] < 0.95
    full = evaluate(path, res, bins="aitod", max_dets="1,10,100,1000", errors=False)
    assert full.summary["AP"] == pytest.approx(1.0)
    assert full.summary["AR@1000"] == pytest.approx(1.0)
    ref = evaluate(
        path, res, bins="aitod", max_dets="1,10,100,1000", errors=False, backend="pycocotools"
    )
    assert np.array_equal(full.precision, ref.precision)


def test_error_analysis_base_equals_bin_ap50(ref):
    d, exp = ref
    r = evaluate(d / exp["gt"], d / exp["bbox"]["dt"], bins="aitod")
    for name in r.per_bin:
        key = "AP50" if name == "all" else f"AP50_{name}"
        assert r.errors[name]["base_AP50"] == pytest.approx(r.summary[key], abs=1e-12)
    assert set(r.dominant_small_errors()) == {"verytiny", "tiny", "small"}
