"""Anchor coverage: best-anchor IoUs worked out by hand on tiny images, and the tool's table."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from detector.config import load_config
from detector.models import anchor_coverage, format_anchor_coverage
from detector.models.anchor_coverage import feature_strides, image_anchors
from detector.models.detector import build_anchor_generator

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "anchor_coverage.py"


def _cfg(variant: str, sizes: list[int], *extra: str):
    return load_config(
        ROOT / "configs" / "base.yaml",
        [
            f"model.variant={variant}",
            f"model.anchors.sizes={sizes}",
            "model.anchors.aspect_ratios=[1.0]",
            *extra,
        ],
    )


def _coco(boxes: list[list[float]], size: int = 64) -> dict:
    return {
        "images": [{"id": 1, "file_name": "a.png", "height": size, "width": size}],
        "annotations": [
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": 1,
                "bbox": b,
                "area": b[2] * b[3],
                "iscrowd": 0,
            }
            for i, b in enumerate(boxes)
        ],
        "categories": [{"id": 1, "name": "thing"}],
    }


def test_strides_per_variant():
    assert feature_strides("c5") == [32]
    assert feature_strides("dc5") == [16]
    assert feature_strides("dc4") == [8]
    assert feature_strides("fpn") == [4, 8, 16, 32, 64]
    with pytest.raises(ValueError, match="unknown model.variant"):
        feature_strides("c6")


def test_anchor_grid_matches_torchvision_layout():
    # 64x64 at stride 32, one 32 px square anchor: centres at (0, 0), (32, 0), (0, 32), (32, 32)
    cfg = _cfg("c5", [32])
    anchors = image_anchors(build_anchor_generator(cfg.model), "c5", 64, 64)
    expected = torch.tensor(
        [[-16, -16, 16, 16], [16, -16, 48, 16], [-16, 16, 16, 48], [16, 16, 48, 48]],
        dtype=anchors.dtype,
    )
    assert torch.equal(anchors, expected)
    # a 50x50 image is padded to 64x64 first, like the model's transform does
    assert image_anchors(build_anchor_generator(cfg.model), "c5", 50, 50).shape == (4, 4)


def test_coverage_by_hand_single_map():
    # a 16 px box at the origin and a 34 px box around the anchor centred at (32, 32)
    data = _coco([[0, 0, 16, 16], [15, 15, 34, 34]])
    res = anchor_coverage(_cfg("c5", [32]), data, bins="coco")
    small, medium = res["bins"]["small"], res["bins"]["medium"]
    # best anchor of the 16 px box: [-16,-16,16,16], intersection 256 / union 1024
    assert small["count"] == 1 and small["median_best_iou"] == pytest.approx(0.25)
    assert small["above_fg"] == 0.0 and small["low_quality_only"] == 1.0
    assert small["mean_positives"] == 0.0
    # the 34 px box contains the [16, 16, 48, 48] anchor: IoU 32^2 / 34^2
    assert medium["count"] == 1 and medium["median_best_iou"] == pytest.approx(1024 / 1156)
    assert medium["above_fg"] == 1.0 and medium["mean_positives"] == 1.0
    assert res["bins"]["all"]["count"] == 2 and res["bins"]["large"] == {"count": 0}

    # stride 16 with 16 px anchors: the box lies between the centres (0, 0), (16, 0), (0, 16)
    # and (16, 16); each of those anchors overlaps it by 8x8 px: IoU 64 / (256 + 256 - 64) = 1/7
    res16 = anchor_coverage(_cfg("dc5", [16]), _coco([[0, 0, 16, 16]]), bins="coco")
    assert res16["bins"]["small"]["median_best_iou"] == pytest.approx(1 / 7)


def test_fpn_p2_anchor_fits_the_small_box_and_threshold_is_the_configs():
    # P2 (stride 4) has an anchor centred at (8, 8): exactly the 16 px box
    res = anchor_coverage(_cfg("fpn", [16, 32, 64, 128, 256]), _coco([[0, 0, 16, 16]]), bins="coco")
    assert res["bins"]["small"]["median_best_iou"] == pytest.approx(1.0)
    assert res["strides"] == [4, 8, 16, 32, 64]
    # lowering the RPN threshold to 1/7 turns the dc5 fallback match into a real positive
    res = anchor_coverage(
        _cfg("dc5", [16], "model.rpn.fg_iou_thresh=0.14", "model.rpn.bg_iou_thresh=0.1"),
        _coco([[0, 0, 16, 16]]),
        bins="coco",
    )
    assert res["fg_iou_thresh"] == 0.14
    assert res["bins"]["small"]["above_fg"] == 1.0
    assert res["bins"]["small"]["mean_positives"] == 4.0  # the four anchors around it


def test_scale_resizes_boxes_but_keeps_the_bins():
    # x2: the 16 px box becomes [0, 0, 32, 32], which the stride-32 grid cannot centre (IoU 1/7)
    # but its bin stays "small" (the evaluation bins the original areas)
    res = anchor_coverage(_cfg("c5", [32]), _coco([[0, 0, 16, 16]]), bins="coco", scale=2.0)
    assert res["bins"]["small"]["count"] == 1
    assert res["bins"]["small"]["median_best_iou"] == pytest.approx(1 / 7)
    # short side 128 on a 64x64 image is the same x2; a 100 px cap on the long side makes it x1.5625
    same = anchor_coverage(_cfg("c5", [32]), _coco([[0, 0, 16, 16]]), short_side=128)
    assert same["bins"]["small"] == res["bins"]["small"]
    capped = anchor_coverage(
        _cfg("c5", [32]), _coco([[0, 0, 16, 16]]), short_side=128, max_size=100
    )
    # the box becomes 25 px at the origin; best anchor [-16,-16,16,16]: 16^2 / (32^2 + 25^2 - 16^2)
    assert capped["bins"]["small"]["median_best_iou"] == pytest.approx(256 / (1024 + 625 - 256))


def test_tool_prints_and_writes_json(tmp_path, capsys):
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(_coco([[0, 0, 16, 16], [16, 16, 32, 32]])))
    spec = importlib.util.spec_from_file_location("anchor_coverage_tool", TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    out = tmp_path / "cov.json"
    cfg = str(ROOT / "configs" / "faster_rcnn_r18_dc5.yaml")
    rc = tool.main(
        ["--ann", str(ann), "--config", cfg, "--json", str(out), "model.anchors.sizes=[32]"]
    )
    assert rc == 0
    text = capsys.readouterr().out
    assert "dc5: strides [16]" in text and "fallback only" in text
    saved = json.loads(out.read_text())[cfg]
    assert saved["bins"]["all"]["count"] == 2
    assert format_anchor_coverage(saved).splitlines()[0].startswith("dc5: strides [16]")
    assert tool.main(["--ann", str(ann), "--config", cfg, "model.anchors.sise=[32]"]) == 2
    assert "did you mean 'sizes'" in capsys.readouterr().err
