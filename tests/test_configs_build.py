"""Every config in configs/ builds and runs one training step and one inference step on CPU.

The architecture is the config's own; only the numbers of proposals and sampled RoIs are cut
(and the images are 64x64) so the whole sweep stays fast on a CPU.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from detector.config import load_config
from detector.models import build_detector

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
SMALL = [
    "model.rpn.pre_nms_top_n_train=100",
    "model.rpn.post_nms_top_n_train=50",
    "model.rpn.pre_nms_top_n_test=100",
    "model.rpn.post_nms_top_n_test=50",
    "model.rpn.batch_size_per_image=64",
    "model.roi.batch_size_per_image=16",
]
REQUIRED = [
    f"faster_rcnn_{d}_{v}.yaml" for d in ("r18", "r50") for v in ("c5", "dc5", "dc5_hdc", "fpn")
]


def test_required_configs_exist():
    names = {p.name for p in CONFIGS}
    assert set(REQUIRED) <= names
    assert "base.yaml" in names


def test_variants_share_base():
    for path in CONFIGS:
        if path.name != "base.yaml":
            assert "_base_:" in path.read_text(), path.name


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_train_and_infer(path):
    torch.manual_seed(0)
    cfg = load_config(path, SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # plain DC5 fails HDC rule 1 on purpose
        model = build_detector(cfg, num_classes=2)
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 24.0, 20.0]]), "labels": torch.tensor([1])},
        {
            "boxes": torch.tensor([[30.0, 40.0, 42.0, 52.0], [2.0, 2.0, 10.0, 9.0]]),
            "labels": torch.tensor([2, 1]),
        },
    ]
    model.train()
    losses = model(images, targets)
    assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness", "loss_rpn_box_reg"}
    total = sum(losses.values())
    assert torch.isfinite(total)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3)
    total.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.backbone.parameters())
    opt.step()
    model.eval()
    with torch.no_grad():
        out = model([torch.rand(3, 64, 64)])
    assert len(out) == 1 and set(out[0]) == {"boxes", "labels", "scores"}
    boxes = out[0]["boxes"]
    if len(boxes):
        assert boxes.min() >= 0 and boxes[:, 2].max() <= 64 and boxes[:, 3].max() <= 64
        assert out[0]["labels"].min() >= 1 and out[0]["labels"].max() <= 2
