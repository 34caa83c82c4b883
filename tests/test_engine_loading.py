"""``load_trained_model``: the one way evaluation, studies and prediction load a trained model."""

from __future__ import annotations

import types

import pytest
import torch

from detector.config import load_config
from detector.engine.checkpoint import (
    FORMAT,
    CheckpointError,
    atomic_save,
    config_fingerprint,
    model_file,
    model_signature,
)
from detector.engine.loading import load_trained_model
from detector.models import build_detector

NUM_CLASSES = 3
pytestmark = pytest.mark.filterwarnings("ignore:HDC check failed")  # dc5 default rates


def _cfg(*overrides: str):
    return load_config(None, ["device=cpu", *overrides])


def _trained(variant: str = "dc5"):
    """A randomly initialised detector of ``variant`` standing in for a trained one."""
    cfg = _cfg(f"model.variant={variant}")
    torch.manual_seed(0)
    return cfg, build_detector(cfg, num_classes=NUM_CLASSES).eval()


def _save_training_ckpt(model, cfg, path):
    cfg_dict = cfg.to_dict()
    cfg_dict["model"]["num_classes"] = NUM_CLASSES
    atomic_save(
        {
            "format": FORMAT,
            "version": 1,
            "iteration": 7,
            "model": model.state_dict(),
            "config": cfg_dict,
            "fingerprint": config_fingerprint(cfg, NUM_CLASSES),
            "signature": {**model_signature(cfg), "num_classes": NUM_CLASSES},
        },
        path,
    )
    return path


def _one_line(err: pytest.ExceptionInfo) -> str:
    """The message, checked to be one line that a CLI can print without a traceback."""
    msg = str(err.value)
    assert "\n" not in msg and err.value.__cause__ is None
    return msg


def test_missing_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(CheckpointError) as err:
        load_trained_model(_cfg(), tmp_path / "run" / "model_final.pth")
    msg = _one_line(err)
    assert "checkpoint not found" in msg and "model_final.pth" in msg and "Fix:" in msg


@pytest.mark.parametrize("form", ["training", "model_final"])
def test_checkpoint_of_another_variant_is_refused(tmp_path, form):
    """c5 and dc5 weights have the same shapes, so only the fingerprint tells them apart."""
    c5_cfg, c5_model = _trained("c5")
    path = tmp_path / f"{form}.pth"
    if form == "training":
        _save_training_ckpt(c5_model, c5_cfg, path)
    else:
        atomic_save(model_file(c5_model.state_dict(), c5_cfg, NUM_CLASSES, 7), path)
    with pytest.raises(CheckpointError) as err:
        load_trained_model(_cfg("model.variant=dc5"), path)
    msg = _one_line(err)
    assert "different model config" in msg and "variant: 'c5' vs 'dc5'" in msg


def test_class_count_mismatches_are_refused(tmp_path):
    cfg, model = _trained()
    bare = tmp_path / "model_final.pth"
    atomic_save(model.state_dict(), bare)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_trained_model(_cfg("model.num_classes=5"), bare)
    other_data = types.SimpleNamespace(num_classes=5, ann_file="val.json")
    with pytest.raises(CheckpointError, match="predicts 3 classes .* val.json has 5") as err:
        load_trained_model(cfg, bare, dataset=other_data)
    _one_line(err)


@pytest.mark.slow  # three full-size R18 detectors predicting: ~10 s each on 2 busy cores
@pytest.mark.parametrize("form", ["training", "model_final", "bare"])
def test_good_checkpoint_predicts_like_the_saved_model(tmp_path, form):
    cfg, model = _trained()
    path = tmp_path / f"{form}.pth"
    if form == "training":
        _save_training_ckpt(model, cfg, path)
    elif form == "model_final":  # the self-describing final model: weights plus fingerprint
        atomic_save(model_file(model.state_dict(), cfg, NUM_CLASSES, 7), path)
    else:
        atomic_save(model.state_dict(), path)
    assert cfg.model.num_classes == 0  # left to the data: the checkpoint tells
    loaded, info = load_trained_model(cfg, path)
    assert info["num_classes"] == NUM_CLASSES and info["num_classes_from"] == "checkpoint"
    assert info["device"] == torch.device("cpu") and not loaded.training
    assert info["iteration"] == (None if form == "bare" else 7)
    torch.manual_seed(1)
    image = torch.rand(3, 96, 128)
    with torch.inference_mode():
        want, got = model([image])[0], loaded([image])[0]
    assert len(want["boxes"]) > 0
    for key in ("boxes", "scores", "labels"):
        assert torch.equal(want[key], got[key]), key
