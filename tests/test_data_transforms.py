"""Train transforms keep every box inside the image with the right size; samples are seeded."""

from __future__ import annotations

import pytest
import torch
from torchvision import tv_tensors

from detector.config.loader import load_config
from detector.data.transforms import (
    HorizontalFlip,
    RandomCropVisible,
    ResizeShortSide,
    build_transforms,
)


def _sample(h=60, w=80):
    image = tv_tensors.Image(torch.rand(3, h, w))
    boxes = torch.tensor(
        [[0, 0, 10, 10], [30, 20, 50, 30], [70, 50, 80, 60], [5, 40, 9, 44]], dtype=torch.float32
    )
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
        "labels": torch.tensor([1, 2, 3, 4]),
        "area": torch.tensor([100.0, 200.0, 100.0, 16.0]),
        "iscrowd": torch.zeros(4, dtype=torch.int64),
    }
    return image, target


def _inside(image, target):
    h, w = image.shape[-2:]
    b = target["boxes"].as_subclass(torch.Tensor)
    return bool(((b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= w) & (b[:, 3] <= h)).all())


def test_flip_moves_boxes_and_keeps_sizes():
    image, target = _sample()
    out_img, out = HorizontalFlip(1.0)(image, target)
    assert torch.equal(out_img, image.flip(-1))
    assert out["boxes"].as_subclass(torch.Tensor)[1].tolist() == [30, 20, 50, 30]
    assert out["boxes"].as_subclass(torch.Tensor)[0].tolist() == [70, 0, 80, 10]
    assert _inside(out_img, out) and torch.equal(out["labels"], target["labels"])


def test_crop_keeps_mostly_visible_boxes_and_drops_slivers():
    torch.manual_seed(0)
    for _ in range(50):
        image, target = _sample()
        out_img, out = RandomCropVisible(40, min_visibility=0.5)(image, target)
        assert out_img.shape[-2:] == (40, 40) and out["boxes"].canvas_size == (40, 40)
        assert _inside(out_img, out)
        b = out["boxes"].as_subclass(torch.Tensor)
        assert len(b) == len(out["labels"]) == len(out["area"])
        for box, lab in zip(b, out["labels"]):
            orig = target["boxes"].as_subclass(torch.Tensor)[int(lab) - 1]
            full = float((orig[2] - orig[0]) * (orig[3] - orig[1]))
            assert float((box[2] - box[0]) * (box[3] - box[1])) >= 0.5 * full - 1e-4


def test_crop_visibility_rule(monkeypatch):
    """Crop window forced to x in [20, 60], y in [0, 40] of an 80x40 image."""
    monkeypatch.setattr(torch, "randint", lambda n, size: torch.tensor({41: 20, 1: 0}[n]))
    image = tv_tensors.Image(torch.rand(3, 40, 80))
    boxes = torch.tensor(
        [[30, 20, 50, 30], [10, 5, 30, 15], [0, 5, 24, 15], [55, 0, 75, 10], [70, 0, 80, 10]],
        dtype=torch.float32,
    )  # inside | 50% visible | 17% | 25% | outside
    target = {
        "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(40, 80)),
        "labels": torch.tensor([1, 2, 3, 4, 5]),
        "area": torch.tensor([200.0, 200.0, 240.0, 200.0, 100.0]),
    }
    out_img, out = RandomCropVisible(40, min_visibility=0.5)(image, target)
    assert torch.equal(out_img, image[..., :, 20:60])
    assert out["labels"].tolist() == [1, 2]
    assert out["boxes"].as_subclass(torch.Tensor).tolist() == [[10, 20, 30, 30], [0, 5, 10, 15]]
    assert out["area"].tolist() == [200.0, 200.0]  # GT area stays the JSON's


def test_multiscale_resize_and_jitter_scale_boxes():
    image, target = _sample()
    t = ResizeShortSide([120], (1.0, 1.0), max_size=1000)
    out_img, out = t(image, target)
    assert out_img.shape[-2:] == (120, 160)
    assert out["boxes"].as_subclass(torch.Tensor)[1].tolist() == pytest.approx([60, 40, 100, 60])
    assert _inside(out_img, out)
    capped = ResizeShortSide([120], (1.0, 1.0), max_size=100)(image, target)[0]
    assert capped.shape[-2:] == (75, 100)
    torch.manual_seed(1)
    sizes = {ResizeShortSide([], (0.5, 2.0))(image, target)[0].shape[-2] for _ in range(10)}
    assert len(sizes) > 3 and all(30 <= s <= 120 for s in sizes)


def test_default_pipelines_never_shrink():
    cfg = load_config()
    image, target = _sample()
    for train in (True, False):
        out_img, out = build_transforms(cfg, train=train)(image, target)
        assert out_img.shape == image.shape
        assert _inside(out_img, out) and len(out["boxes"]) == 4


def test_full_train_pipeline_seeded_and_inside():
    cfg = load_config(
        None,
        [
            "data.transforms.crop_size=48",
            "data.transforms.train_scales=[60,90]",
            "data.transforms.scale_jitter=[0.8,1.2]",
        ],
    )
    pipe = build_transforms(cfg, train=True)
    results = []
    for seed in (5, 5, 6):
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            image, target = _sample()
            results.append(pipe(image, target))
    (a_img, a), (b_img, b), _ = results
    assert torch.equal(a_img, b_img) and torch.equal(a["boxes"], b["boxes"])
    for img, t in results:
        assert img.shape[-2:] == (48, 48) and _inside(img, t)
