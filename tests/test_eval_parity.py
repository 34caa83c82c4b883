"""Full precision/recall arrays equal pycocotools' on generated data."""

from __future__ import annotations

import numpy as np
import pytest

from detector.evaluation.coco_io import load_gt, load_results
from detector.evaluation.cocotools_backend import run_cocoeval
from detector.evaluation.fast_eval import accumulate, build_match_table, coco_iou_thrs
from detector.evaluation.synthetic import make_dataset
from detector.utils.bins import get_bins


@pytest.fixture(scope="module")
def generated():
    gt, res = make_dataset(2000, seed=7, n_cats=6, crowd_frac=0.05, empty_frac=0.1)
    g = load_gt(gt)
    return g, load_results(res, g)


def _both(g, d, bins, max_dets=(1, 10, 100), thrs=None):
    thrs = coco_iou_thrs() if thrs is None else thrs
    b = get_bins(bins)
    mt = build_match_table(g, d, b, max_dets, thrs)
    p1, r1 = accumulate(mt)
    p2, r2, _ = run_cocoeval(g, d, b, max_dets, thrs)
    return p1, r1, p2, r2


@pytest.mark.slow
@pytest.mark.parametrize(
    "bins,max_dets",
    [("coco", (1, 10, 100)), ("0,8,16,32,96,inf", (1, 10, 30, 100))],
)
def test_parity_generated(generated, bins, max_dets):
    g, d = generated
    # the data has crowd boxes, score ties, images without GT and a class with no detections
    assert g.crowd.sum() > 0 and len(np.unique(d.score)) < len(d) // 10
    assert len(np.unique(g.img)) < g.num_images
    assert len(np.unique(d.cat)) < len(g.cat_ids)
    p1, r1, p2, r2 = _both(g, d, bins, max_dets)
    assert p1.shape == p2.shape
    assert np.abs(p1 - p2).max() <= 1e-12 and np.abs(r1 - r2).max() <= 1e-12
    assert np.array_equal(p1 == -1, p2 == -1)


def test_parity_small_max_dets_and_arange_thresholds():
    gt, res = make_dataset(150, seed=3, n_cats=3, dets_per_image=40)
    g = load_gt(gt)
    d = load_results(res, g)
    thrs = np.arange(0.5, 0.96, 0.05)  # not bit-equal to linspace
    p1, r1, p2, r2 = _both(g, d, "aitod", (1, 5, 20), thrs)
    assert np.array_equal(p1, p2) and np.array_equal(r1, r2)


def test_weights_equal_duplicated_images():
    """A bootstrap weight of k equals having the image k times (pycocotools as reference)."""
    gt, res = make_dataset(80, seed=5, n_cats=3, dets_per_image=30)
    rng = np.random.default_rng(0)
    for r in res:
        r["score"] = float(rng.random())  # no ties, so order among copies does not matter
    g = load_gt(gt)
    d = load_results(res, g)
    b = get_bins("coco")
    mt = build_match_table(g, d, b, (1, 10, 100), coco_iou_thrs())
    w = np.bincount(rng.integers(0, g.num_images, g.num_images), minlength=g.num_images)
    p1, r1 = accumulate(mt, w)
    by_img, res_by = {}, {}
    for a in gt["annotations"]:
        by_img.setdefault(a["image_id"], []).append(a)
    for r in res:
        res_by.setdefault(r["image_id"], []).append(r)
    images, anns, dets = [], [], []
    nid = aid = 1
    for i, im in enumerate(gt["images"]):
        for _ in range(w[i]):
            images.append(dict(im, id=nid))
            for a in by_img.get(im["id"], []):
                anns.append(dict(a, id=aid, image_id=nid))
                aid += 1
            dets += [dict(r, image_id=nid) for r in res_by.get(im["id"], [])]
            nid += 1
    g2 = load_gt(dict(gt, images=images, annotations=anns))
    p2, r2, _ = run_cocoeval(g2, load_results(dets, g2), b, (1, 10, 100), coco_iou_thrs())
    assert np.array_equal(p1, p2) and np.array_equal(r1, r2)


# ------------------------------------------------------------ scoring presets (dense, tiny)


def test_coco_default_is_pycocotools_params_exactly():
    """No preset, or ``coco``: pycocotools' own iouThrs, maxDets and areaRng, bit for bit."""
    from pycocotools.cocoeval import Params

    from detector.evaluation.api import resolve_scoring

    ref = Params(iouType="bbox")
    for preset in (None, "coco"):
        bins, max_dets, thrs = resolve_scoring(preset)
        assert np.array_equal(thrs, ref.iouThrs) and list(max_dets) == ref.maxDets
        b = get_bins(bins)
        assert [x.area_range for x in b] == ref.areaRng and [x.name for x in b] == ref.areaRngLbl


def _preset_parity(gt, res, preset):
    from detector.evaluation import evaluate
    from detector.utils.bins import get_eval_preset

    p = get_eval_preset(preset)
    fast = evaluate(gt, res, errors=False, preset=preset)
    g = load_gt(gt)
    d = load_results(res, g)
    thrs = coco_iou_thrs() if p.iou_thrs is None else np.array(p.iou_thrs)
    bins = get_bins(p.bins)
    prec, rec, ev = run_cocoeval(g, d, bins, p.max_dets, thrs)
    # pycocotools ran with exactly the preset's parameters, and so did the fast path
    assert list(ev.params.maxDets) == list(p.max_dets) == list(fast.max_dets)
    assert np.array_equal(ev.params.iouThrs, fast.iou_thrs)
    assert ev.params.areaRng == [b.area_range for b in fast.bins]
    assert np.array_equal(fast.precision, prec) and np.array_equal(fast.recall, rec)
    return fast


@pytest.mark.parametrize("preset", ["dense", "tinyperson"])
def test_parity_presets_generated(preset):
    """Up to 130 detections per image and class: maxDets 100 truncates, 1500 and 200 do not;
    IoU 0.25 (TinyPerson) lets looser boxes match, crowd boxes absorb the rest."""
    gt, res = make_dataset(8, gt_per_image=40, dets_per_image=130, n_cats=2, seed=11)
    per_cell = np.unique([(r["image_id"], r["category_id"]) for r in res], axis=0, return_counts=1)
    assert per_cell[1].max() > 100 and any(a["iscrowd"] for a in gt["annotations"])
    r = _preset_parity(gt, res, preset)
    if preset == "tinyperson":
        assert r.summary["AP25"] > r.summary["AP50"] > r.summary["AP75"]


@pytest.mark.parametrize("preset", ["dense", "tinyperson"])
def test_parity_presets_reference_pair(shared_data, preset):
    """The official COCO reference pair (crowd boxes included) under the dense presets."""
    import json

    d = shared_data / "coco_eval_reference"
    exp = json.loads((d / "expected_stats.json").read_text())
    gt = json.loads((d / exp["gt"]).read_text())
    res = json.loads((d / exp["bbox"]["dt"]).read_text())
    _preset_parity(gt, res, preset)
