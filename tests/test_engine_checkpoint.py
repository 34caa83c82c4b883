"""Checkpoint files: atomic writes, keep-last-K, clear errors, both checkpoint forms load."""

from __future__ import annotations

import pytest
import torch

from detector.config import load_config
from detector.engine.checkpoint import (
    FORMAT,
    CheckpointError,
    CheckpointManager,
    atomic_save,
    check_fingerprint,
    config_fingerprint,
    load_checkpoint,
    load_model_weights,
    model_signature,
)


def _training_ckpt(model, cfg, iteration=2):
    return {
        "format": FORMAT,
        "iteration": iteration,
        "model": model.state_dict(),
        "fingerprint": config_fingerprint(cfg, 3),
        "signature": {**model_signature(cfg), "num_classes": 3},
    }


def test_atomic_save_leaves_no_temporary_files(tmp_path):
    atomic_save({"w": torch.arange(3)}, tmp_path / "a.pth")
    assert [p.name for p in tmp_path.iterdir()] == ["a.pth"]
    assert torch.equal(load_checkpoint(tmp_path / "a.pth")["w"], torch.arange(3))


def test_manager_keeps_last_k_and_tracks_latest(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    for it in (2, 4, 6):
        mgr.save({"format": FORMAT, "iteration": it, "model": {}}, it)
    assert [p.name for p in mgr.all_checkpoints()] == ["model_0000004.pth", "model_0000006.pth"]
    assert mgr.latest().name == "model_0000006.pth"
    (tmp_path / "last_checkpoint").unlink()
    assert mgr.latest().name == "model_0000006.pth"


def test_truncated_empty_and_garbage_files_are_clear_errors(tmp_path):
    good = tmp_path / "good.pth"
    atomic_save({"w": torch.randn(1000)}, good)
    data = good.read_bytes()
    (tmp_path / "trunc.pth").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.pth").write_bytes(b"")
    (tmp_path / "junk.pth").write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "trunc.pth")
    with pytest.raises(CheckpointError, match="empty"):
        load_checkpoint(tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "junk.pth")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pth")


class _NotAllowed:
    pass


def test_unsafe_pickle_is_refused_by_weights_only(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"obj": _NotAllowed()}, path)
    with pytest.raises(CheckpointError, match="weights_only"):
        load_checkpoint(path)


def test_checkpoint_from_another_config_is_refused(tmp_path):
    cfg = load_config(None)
    other = load_config(None, ["model.backbone.depth=50", "model.variant=c5"])
    model = torch.nn.Linear(2, 2)
    ckpt = _training_ckpt(model, cfg)
    check_fingerprint(ckpt, cfg, 3, "x")  # same config: fine
    with pytest.raises(CheckpointError, match="different model config.*depth: 18 vs 50"):
        check_fingerprint(ckpt, other, 3, "x")
    with pytest.raises(CheckpointError, match="num_classes"):
        check_fingerprint(ckpt, cfg, 5, "x")


def test_load_model_weights_accepts_both_forms(tmp_path):
    cfg = load_config(None)
    src = torch.nn.Linear(4, 3)
    atomic_save(src.state_dict(), tmp_path / "bare.pth")
    atomic_save(_training_ckpt(src, cfg), tmp_path / "full.pth")
    ddp_style = {f"module.{k}": v for k, v in src.state_dict().items()}
    atomic_save(ddp_style, tmp_path / "ddp.pth")
    for name in ("bare.pth", "full.pth", "ddp.pth"):
        dst = torch.nn.Linear(4, 3)
        load_model_weights(dst, tmp_path / name, cfg, 3)
        assert torch.equal(dst.weight, src.weight)
    with pytest.raises(CheckpointError, match="does not fit this model"):
        load_model_weights(torch.nn.Linear(4, 5), tmp_path / "bare.pth")


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.variant=c5"],
        ["model.variant=dc5"],
        ["model.variant=dc4"],
        ["model.variant=dc5", "model.backbone.dilations={layer4: [1, 2]}"],
        ["model.variant=dc5", "model.backbone.dilations={layer4: [1, 2, 5, 9]}"],
        [
            "model.variant=dc5",
            "model.backbone.depth=50",
            "model.backbone.dilations={layer4: [1, 2, 5]}",
        ],
    ],
)
def test_signature_dilations_are_the_rates_the_backbone_builds(overrides):
    from detector.engine.checkpoint import resolved_dilations
    from detector.models import build_backbone

    cfg = load_config(None, [*overrides, "model.backbone.hdc_check=off"])
    built = build_backbone(cfg).rates
    assert resolved_dilations(cfg) == {k: v for k, v in built.items() if any(r != 1 for r in v)}


def test_same_shapes_other_meaning_is_refused():
    """A dc5 checkpoint loads into a c5 model without a shape error; the signature tells."""
    dc5 = load_config(None, ["model.variant=dc5"])
    ckpt = _training_ckpt(torch.nn.Linear(2, 2), dc5)
    with pytest.raises(CheckpointError, match="dilations: .*layer4.* vs \\{\\}"):
        check_fingerprint(ckpt, load_config(None, ["model.variant=c5"]), 3, "x")
    with pytest.raises(CheckpointError, match="aspect_ratios"):
        check_fingerprint(
            ckpt, load_config(None, ["model.anchors.aspect_ratios=[1, 2, 4]"]), 3, "x"
        )
    check_fingerprint(ckpt, load_config(None, ["model.rpn.matcher=nwd"]), 3, "x")


def test_older_signatures_are_compared_on_the_keys_they_have():
    cfg = load_config(None)
    ckpt = _training_ckpt(torch.nn.Linear(2, 2), cfg)
    old_sig = {k: v for k, v in ckpt["signature"].items() if k not in ("dilations", "anchor_sizes")}
    ckpt.update(signature=old_sig, fingerprint="0123456789abcdef")  # hashed before the new keys
    check_fingerprint(ckpt, cfg, 3, "x")
    with pytest.raises(CheckpointError, match="depth: 18 vs 50"):
        check_fingerprint(ckpt, load_config(None, ["model.backbone.depth=50"]), 3, "x")


def test_prune_never_deletes_the_checkpoint_just_written(tmp_path):
    atomic_save({"iteration": 100}, tmp_path / "model_0000100.pth")  # left by an earlier timeline
    mgr = CheckpointManager(tmp_path, keep_last=1)
    for it in (2, 4):
        mgr.save({"format": FORMAT, "iteration": it, "model": {}}, it)
    assert [p.name for p in mgr.all_checkpoints()] == ["model_0000004.pth", "model_0000100.pth"]
    assert mgr.latest().name == "model_0000004.pth"


def test_model_files_load_like_checkpoints(tmp_path):
    from detector.engine.checkpoint import MODEL_FORMAT, extract_state_dict, model_file

    cfg = load_config(None)
    src = torch.nn.Linear(4, 3)
    obj = model_file(src.state_dict(), cfg, 3, 7)
    atomic_save(obj, tmp_path / "model_final.pth")
    loaded = load_checkpoint(tmp_path / "model_final.pth")  # weights_only=True
    assert loaded["format"] == MODEL_FORMAT and loaded["iteration"] == 7
    assert extract_state_dict(loaded).keys() == src.state_dict().keys()
    dst = torch.nn.Linear(4, 3)
    load_model_weights(dst, tmp_path / "model_final.pth", cfg, 3)
    assert torch.equal(dst.weight, src.weight)
    with pytest.raises(CheckpointError, match="variant: 'dc5' vs 'fpn'"):
        load_model_weights(
            dst,
            tmp_path / "model_final.pth",
            load_config(None, ["model.variant=fpn", "model.anchors.sizes=[16, 32, 64, 128, 256]"]),
            3,
        )
