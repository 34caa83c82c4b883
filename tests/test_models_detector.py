"""build_detector: variants, anchors, RoI wiring, native-size transform, parameter parity,
model_info and tools/model_info.py."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from detector.cli import info as model_info_tool
from detector.config import ConfigError, load_config
from detector.models import NativeSizeTransform, build_detector, count_parameters, model_info

ROOT = Path(__file__).resolve().parents[1]


def _cfg(*overrides, config=None):
    return load_config(config and ROOT / "configs" / config, list(overrides))


def _build(cfg, n=3):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return build_detector(cfg, num_classes=n)


def test_c5_dc5_hdc_detectors_have_equal_parameters():
    names = ["c5", "dc5", "dc5_hdc"]
    r18 = {n: count_parameters(_build(_cfg(config=f"faster_rcnn_r18_{n}.yaml"))) for n in names}
    assert len(set(r18.values())) == 1, r18
    r18_dc4 = count_parameters(_build(_cfg(config="faster_rcnn_r18_dc4.yaml")))
    assert r18_dc4 == r18["c5"]


def test_r50_c5_dc5_equal_parameters():
    c5 = _build(_cfg(config="faster_rcnn_r50_c5.yaml"))
    dc5 = _build(_cfg(config="faster_rcnn_r50_dc5.yaml"))
    assert count_parameters(c5.backbone) == count_parameters(dc5.backbone)
    assert count_parameters(c5) == count_parameters(dc5)


def test_single_map_wiring():
    m = _build(
        _cfg(
            "model.variant=dc5",
            "model.anchors.sizes=[8,16,32]",
            "model.anchors.aspect_ratios=[1.0]",
        )
    )
    assert m.roi_heads.box_roi_pool.featmap_names == ["0"]
    assert m.rpn.anchor_generator.sizes == ((8, 16, 32),)
    assert m.rpn.anchor_generator.num_anchors_per_location() == [3]
    assert m.output_stride == 16 and m.backbone.output_stride == 16
    assert m.roi_heads.box_predictor.cls_score.out_features == 4  # 3 classes + background


def test_fpn_wiring():
    m = _build(_cfg("model.variant=fpn", "model.anchors.sizes=[8,16,32,64,128]"))
    assert m.roi_heads.box_roi_pool.featmap_names == ["0", "1", "2", "3"]
    assert m.rpn.anchor_generator.sizes == ((8,), (16,), (32,), (64,), (128,))
    assert m.backbone.out_channels == 256
    with pytest.raises(ConfigError, match="one size per level.*got 3"):
        _build(_cfg("model.variant=fpn", "model.anchors.sizes=[8,16,32]"))


def test_rpn_roi_parameters_follow_config():
    m = _build(
        _cfg(
            "model.roi.detections_per_img=1000",
            "model.rpn.post_nms_top_n_test=3000",
            "model.rpn.pre_nms_top_n_train=5000",
            "model.roi.batch_size_per_image=1024",
            "model.roi.score_thresh=0.001",
            "model.roi.nms_thresh=0.6",
            "model.rpn.nms_thresh=0.8",
        )
    )
    assert m.roi_heads.detections_per_img == 1000
    assert m.rpn._post_nms_top_n["testing"] == 3000
    assert m.rpn._pre_nms_top_n["training"] == 5000
    assert m.roi_heads.fg_bg_sampler.batch_size_per_image == 1024
    assert m.roi_heads.score_thresh == 0.001 and m.roi_heads.nms_thresh == 0.6
    assert m.rpn.nms_thresh == 0.8


def test_native_size_transform_keeps_image_size():
    m = _build(_cfg("model.variant=c5"))
    assert isinstance(m.transform, NativeSizeTransform)
    images = [torch.rand(3, 70, 90), torch.rand(3, 50, 40)]
    targets = [{"boxes": torch.tensor([[10.0, 10.0, 20.0, 30.0]]), "labels": torch.tensor([1])}] * 2
    image_list, out_targets = m.transform(images, targets)
    assert image_list.image_sizes == [(70, 90), (50, 40)]
    assert image_list.tensors.shape[-2:] == (96, 96)  # padded to a multiple of 32
    assert torch.equal(out_targets[0]["boxes"], targets[0]["boxes"])
    m.eval()
    with torch.no_grad():
        out = m(images)
    for o, (h, w) in zip(out, [(70, 90), (50, 40)]):
        if len(o["boxes"]):
            assert o["boxes"][:, 2].max() <= w and o["boxes"][:, 3].max() <= h


def test_resizing_transform_when_asked():
    m = _build(_cfg("model.transform.min_size=128", "model.transform.max_size=0"))
    assert not isinstance(m.transform, NativeSizeTransform)
    image_list, _ = m.transform([torch.rand(3, 64, 80)])
    assert image_list.image_sizes == [(128, 160)]


def test_detector_errors():
    with pytest.raises(ConfigError, match="positive number of foreground classes"):
        build_detector(_cfg())  # num_classes 0 and none given
    with pytest.raises(ConfigError, match="unknown model.variant 'c4'; valid: c5, dc5, dc4, fpn"):
        build_detector(_cfg("model.variant=c4"), num_classes=2)
    with pytest.raises(ConfigError, match="anchors.sizes must be positive"):
        build_detector(_cfg("model.anchors.sizes=[0, 16]"), num_classes=2)


def test_model_info_dict():
    info = model_info(_cfg(config="faster_rcnn_r18_dc5_hdc.yaml"), (128, 128))
    assert info["output_stride"] == 16 and info["feature_strides"] == {"0": 16}
    assert info["feature_size"] == {"0": [512, 8, 8]}
    assert info["receptive_field"]["layer4"] == {"rf": 755, "jump": 16}
    assert info["hdc"]["valid"] and info["hdc"]["rates"] == [1, 2, 5, 9]
    assert info["params"] == count_parameters(
        _build(_cfg(config="faster_rcnn_r18_dc5_hdc.yaml"), 1)
    )
    # FLOPs: dilation changes the map size, not the conv cost per position
    c5 = model_info(_cfg(config="faster_rcnn_r18_c5.yaml"), (128, 128))
    assert info["flops"] > c5["flops"] > 0


def test_model_info_tool_json(capsys):
    config = str(ROOT / "configs" / "faster_rcnn_r18_fpn.yaml")
    assert model_info_tool.main(["--config", config, "--input-size", "64", "64", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"params", "flops", "output_stride", "receptive_field", "hdc"} <= set(info)
    assert info["output_stride"] == 32 and info["feature_strides"]["0"] == 4
    assert info["receptive_field"]["layer4"]["rf"] == 435


def test_model_info_tool_text_and_errors(capsys):
    config = str(ROOT / "configs" / "faster_rcnn_r18_dc5.yaml")
    assert model_info_tool.main(["--config", config, "--input-size", "64", "64"]) == 0
    text = capsys.readouterr().out
    assert "output stride: 16" in text and "HDC (warn): INVALID" in text and "rule 1" in text
    assert model_info_tool.main(["--config", config, "model.variant=dc3"]) == 2
    assert "unknown model.variant 'dc3'" in capsys.readouterr().err
    assert (
        model_info_tool.main(["--config", config, "model.backbone.dilations={layer4: [1, 2, 5]}"])
        == 2
    )
    assert "3 rates" in capsys.readouterr().err
    assert model_info_tool.main(["--config", str(ROOT / "configs" / "missing.yaml")]) == 2


def test_model_info_tool_erf(capsys, tmp_path):
    config = str(ROOT / "configs" / "faster_rcnn_r18_c5.yaml")
    png = tmp_path / "erf.png"
    args = ["--config", config, "--input-size", "64", "64", "--json", "--erf", str(png)]
    assert model_info_tool.main(args) == 0
    info = json.loads(capsys.readouterr().out)
    assert png.is_file() and 0 < info["erf_radius95"] <= 32
