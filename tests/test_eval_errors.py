"""TIDE-style error analysis on hand-built cases where each error type is known."""

from __future__ import annotations

import pytest

from detector.evaluation import evaluate

A, B = 1, 2
G1 = [0, 0, 100, 100]
G2 = [300, 300, 100, 100]


def _gt(boxes):
    return {
        "images": [{"id": 1}],
        "categories": [{"id": A, "name": "a"}, {"id": B, "name": "b"}],
        "annotations": [
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": c,
                "bbox": bb,
                "area": bb[2] * bb[3],
                "iscrowd": 0,
            }
            for i, (bb, c) in enumerate(boxes)
        ],
    }


def _dets(items):
    return [{"image_id": 1, "category_id": c, "bbox": bb, "score": s} for bb, c, s in items]


def _errors(gt_boxes, dets):
    r = evaluate(_gt(gt_boxes), _dets(dets), bins="coco")
    e = r.errors["all"]
    return e, {k: v for k, v in e["count"].items() if v and k != "Other"}


def test_loc_error():
    e, counts = _errors([(G1, A)], [([50, 0, 100, 100], A, 0.9)])  # IoU 1/3
    assert counts == {"Loc": 1}
    assert e["base_AP50"] == 0.0 and e["dAP"]["Loc"] == pytest.approx(1.0)
    assert e["dominant"] == "Loc"


def test_cls_error():
    e, counts = _errors([(G1, A)], [(G1, B, 0.9)])
    assert counts == {"Cls": 1}
    assert e["dAP"]["Cls"] == pytest.approx(1.0)


def test_duplicate_error():
    e, counts = _errors([(G1, A), (G2, A)], [(G1, A, 0.9), (G1, A, 0.8), (G2, A, 0.7)])
    assert counts == {"Dupe": 1}
    base = (51 * 1 + 50 * 2 / 3) / 101
    assert e["base_AP50"] == pytest.approx(base)
    assert e["dAP"]["Dupe"] == pytest.approx(1 - base)


def test_background_error():
    e, counts = _errors([(G1, A)], [([600, 600, 50, 50], A, 0.95), (G1, A, 0.5)])
    assert counts == {"Bkg": 1}
    assert e["dAP"]["Bkg"] == pytest.approx(0.5)


def test_both_error():
    e, counts = _errors(
        [(G1, A), ([600, 600, 50, 50], B)],
        [([50, 0, 100, 100], B, 0.9), ([600, 600, 50, 50], B, 0.5), (G1, A, 0.4)],
    )
    assert counts == {"Both": 1}
    assert e["base_AP50"] == pytest.approx(0.75)
    assert e["dAP"]["Both"] == pytest.approx(0.25)


def test_missed_error():
    e, counts = _errors([(G1, A), (G2, A)], [(G1, A, 0.9)])
    assert counts == {"Missed": 1}
    assert e["dAP"]["Missed"] == pytest.approx(1 - 51 / 101)


def test_errors_per_size_bin():
    small = [5, 5, 10, 10]
    r = evaluate(
        _gt([(G1, A), (small, A)]),
        _dets([(G1, A, 0.9), ([11, 5, 10, 10], A, 0.8)]),  # small one: IoU 0.25
        bins="coco",
    )
    assert r.errors["small"]["count"]["Loc"] == 1
    assert r.errors["large"]["count"]["Loc"] == 0 and r.errors["large"][
        "base_AP50"
    ] == pytest.approx(1.0)
    assert r.errors["medium"]["status"] == "no objects"
    assert r.dominant_small_errors() == {"small": "Loc"}
    assert "Dominant error in the small bins" in r.markdown()
