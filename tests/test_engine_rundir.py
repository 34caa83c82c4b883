"""The run directory and resumption: one run per directory, one training at a time, changed
settings on resume take effect or are refused, model files carry the fingerprint, the trained
model survives a failing final evaluation, bad pointers and disk faults are named."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
import yaml

from detector.config import load_config
from detector.engine.checkpoint import (
    CheckpointError,
    CheckpointManager,
    atomic_save,
    check_fingerprint,
    load_model_weights,
)
from detector.engine.optim import lr_factor
from detector.engine.rundir import LOCK_NAME, RunDirError, claim_run_dir, resume_changes
from detector.engine.trainer import EvaluationFailed, Trainer, train, unwrap
from detector.utils.errors import SmalldetError
from detector.utils.lock import lock_holder, me


@pytest.fixture(scope="session")
def make_cfg(tiny_config, tiny_cache):
    """``make_cfg(folder, extra=None, overrides=())``: the tiny config, loaded."""

    def make(folder, extra=None, overrides=()):
        return load_config(tiny_config(folder / "cfg.yaml", tiny_cache, extra), list(overrides))

    return make


def _rows(run_dir):
    path = run_dir / "metrics.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def _old_run(d):
    """The files another (finished) run left in ``d``."""
    d.mkdir(parents=True, exist_ok=True)
    (d / "model_0000100.pth").write_bytes(b"old checkpoint")
    (d / "last_checkpoint").write_text("model_0000100.pth\n")
    (d / "model_final.pth").write_bytes(b"old final")
    (d / "config.yaml").write_text("old: config\n")
    (d / "metrics.jsonl").write_text(json.dumps({"type": "train", "iteration": 100}) + "\n")
    (d / "tb").mkdir()
    (d / "tb" / "events.old").write_text("old events")


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, make_cfg):
    """A finished 4-iteration run (checkpoints at 2 and 4); tests copy it before changing it."""
    root = tmp_path_factory.mktemp("trained")
    cfg = make_cfg(root, {"solver": {"max_iter": 4}})
    train(cfg, root / "run")
    return root / "run"


def _copy(trained_run, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(trained_run, dst)
    return dst


# --------------------------------------------------------------- 1. no run is overwritten


def test_another_runs_directory_is_refused_untouched(tmp_path, make_cfg):
    out = tmp_path / "run"
    _old_run(out)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(RunDirError) as e:
        train(make_cfg(tmp_path), out)
    msg = str(e.value)
    assert str(out) in msg and "--resume" in msg and "--overwrite" in msg and "--output" in msg
    assert "\n" not in msg and isinstance(e.value, SmalldetError)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert not (out / LOCK_NAME).exists()


def test_an_empty_or_foreign_only_directory_is_fine(tmp_path):
    (tmp_path / "empty").mkdir()
    lock, moved = claim_run_dir(tmp_path / "empty", resume=False, overwrite=False)
    assert moved is None and lock_holder(lock) == me()
    lock.unlink()
    (tmp_path / "study").mkdir()
    (tmp_path / "study" / "study_run.json").write_text("{}")  # not a training's file
    lock, _ = claim_run_dir(tmp_path / "study", resume=False, overwrite=False)
    lock.unlink()
    with pytest.raises(RunDirError, match="give one of them"):
        claim_run_dir(tmp_path / "x", resume=True, overwrite=True)


@pytest.mark.slow
def test_overwrite_moves_the_old_run_aside_and_starts_clean(tmp_path, make_cfg):
    out = tmp_path / "run"
    _old_run(out)
    (out / ".model_0000004.pth.k3j2h1.tmp").write_bytes(b"\0" * 1000)  # a killed write
    cfg = make_cfg(tmp_path)  # 6 iterations, checkpoints every 2, keep 2
    train(cfg, out, overwrite=True)

    aside = [p for p in out.iterdir() if p.name.startswith(".overwritten-")]
    assert len(aside) == 1
    old = aside[0]
    assert (old / "model_0000100.pth").read_bytes() == b"old checkpoint"
    assert (old / "model_final.pth").read_bytes() == b"old final"
    assert (old / "tb" / "events.old").exists() and (old / "config.yaml").exists()
    assert not list(out.glob(".*.tmp")) and not list(old.glob(".*.tmp"))
    # the new run alone: its checkpoints were not pruned for the old, higher-numbered one
    assert sorted(p.name for p in out.glob("model_0*.pth")) == [
        "model_0000004.pth",
        "model_0000006.pth",
    ]
    assert (out / "last_checkpoint").read_text().strip() == "model_0000006.pth"
    rows = _rows(out)
    assert [r["iteration"] for r in rows if r["type"] == "train"] == [2, 4, 6]
    assert max(r["iteration"] for r in rows) == 6  # nothing of the old run appended to
    final = torch.load(out / "model_final.pth", weights_only=True)
    assert final["format"] == "smalldet-model" and final["iteration"] == 6
    assert not (out / LOCK_NAME).exists()
    # a later --resume continues the new run, not the old one
    t = Trainer(cfg, out, resume=True)
    try:
        t.setup()
        assert t.start_iter == 6
    finally:
        t.close()


# ------------------------------------------------------------------------------ 2. the lock


def test_a_directory_in_use_is_refused_naming_the_holder(tmp_path, make_cfg):
    out = tmp_path / "run"
    out.mkdir()
    holder = f"1@{socket.gethostname()}"  # pid 1 is alive
    (out / LOCK_NAME).write_text(holder)
    with pytest.raises(RunDirError, match=f"in use.*{holder}"):
        train(make_cfg(tmp_path), out)
    assert lock_holder(out / LOCK_NAME) == holder  # not ours to release


def test_a_dead_processs_lock_is_taken_over_and_released_on_error(tmp_path, make_cfg):
    out = tmp_path / "run"
    out.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (out / LOCK_NAME).write_text(f"{dead.pid}@{socket.gethostname()}")
    cfg = make_cfg(tmp_path, overrides=["data.source=coco"])  # fails in the data phase
    with pytest.raises(SmalldetError, match="data.train_images"):
        train(cfg, out)
    assert not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------- 3. resume with changes


def test_resume_change_policy_per_key_group():
    old = load_config(None).to_dict()
    new = load_config(
        None,
        [
            "solver.lr=0.5",
            "solver.max_iter=2000",
            "eval.period=10",
            "checkpoint.keep_last=9",
            "data.transforms.hflip=0.0",
            "model.backbone.norm=bn",
            "output_dir=elsewhere",
        ],
    ).to_dict()
    refused, schedule, other = resume_changes(old, new)
    assert [k for k, _, _ in refused] == ["model.backbone.norm"]  # frozen_bn -> bn
    assert [k for k, _, _ in schedule] == ["solver.lr", "solver.max_iter"]
    assert [k for k, _, _ in other] == [
        "checkpoint.keep_last",
        "data.transforms.hflip",
        "eval.period",
    ]
    for key in ("seed=3", "solver.optimizer=adamw", "data.builtin.num_train=9"):
        assert [k for k, _, _ in resume_changes(old, load_config(None, [key]).to_dict())[0]] == [
            key.split("=")[0]
        ]
    old["model"]["backbone"]["norm"] = "syncbn"
    assert resume_changes(old, new)[0] == []  # bn <-> syncbn: the same parameters


@pytest.mark.slow
def test_resume_with_a_new_lr_trains_with_it(tmp_path, trained_run, make_cfg):
    out = _copy(trained_run, tmp_path)
    cfg = make_cfg(tmp_path, overrides=["solver.lr=0.004", "solver.max_iter=6"])
    t = Trainer(cfg, out, resume=True)
    try:
        t.setup()
        assert lock_holder(out / LOCK_NAME) == me()  # held for the whole run
        assert t.start_iter == 4
        want = 0.004 * lr_factor(cfg, 6)(4)
        assert [g["lr"] for g in t.optimizer.param_groups] == pytest.approx([want] * 2)
        assert t.scheduler.base_lrs == pytest.approx([0.004, 0.004])
        assert yaml.safe_load((out / "config.yaml").read_text())["solver"]["lr"] == 0.004
        resume_row = [r for r in _rows(out) if r["type"] == "resume"]
        assert resume_row[0]["changed"]["solver.lr"] == [0.01, 0.004]
        t._run()
    finally:
        t.close()
    assert not (out / LOCK_NAME).exists()
    state = torch.load(out / "model_0000006.pth", weights_only=True)
    assert state["scheduler"]["base_lrs"] == pytest.approx([0.004, 0.004])
    assert state["optimizer"]["param_groups"][0]["initial_lr"] == pytest.approx(0.004)


@pytest.mark.slow
def test_resume_refuses_changes_that_cannot_take_effect(tmp_path, trained_run, make_cfg):
    out = _copy(trained_run, tmp_path)
    before = (out / "config.yaml").read_text()
    cfg = make_cfg(tmp_path, overrides=["seed=7", "solver.optimizer=adamw"])
    with pytest.raises(RunDirError) as e:
        train(cfg, out, resume=True)
    msg = str(e.value)
    assert "seed: 0 -> 7" in msg and "solver.optimizer: 'sgd' -> 'adamw'" in msg
    assert "another --output" in msg and str(out / "config.yaml") in msg
    assert (out / "config.yaml").read_text() == before
    assert not (out / LOCK_NAME).exists()


def test_resume_without_checkpoint_restarts_and_drops_old_rows(tmp_path, make_cfg):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.yaml").write_text("old: config\n")  # a run killed before its 1st checkpoint
    (out / "metrics.jsonl").write_text(json.dumps({"type": "train", "iteration": 1}) + "\n")
    t = Trainer(make_cfg(tmp_path), out, resume=True)
    try:
        t.setup()
        # the old rows are gone: only this start's own 'start' row is there
        assert t.start_iter == 0 and [r["type"] for r in _rows(out)] == ["start"]
        assert _rows(out)[0]["threads"] == t.threads and _rows(out)[0]["iteration"] == 0
    finally:
        t.close()
    # a finished run without checkpoints is not silently retrained
    (out / "model_final.pth").write_bytes(b"x")
    with pytest.raises(RunDirError, match="finished run.*--overwrite"):
        train(make_cfg(tmp_path), out, resume=True)


def _files(run_dir):
    """Every file under ``run_dir`` with its bytes and modification time."""
    return {
        str(p.relative_to(run_dir)): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in run_dir.rglob("*")
        if p.is_file()
    }


@pytest.mark.slow
def test_resume_of_a_finished_run_changes_nothing(tmp_path, trained_run, make_cfg, capsys):
    out = _copy(trained_run, tmp_path)
    before = _files(out)
    # a changed eval setting would be recorded in config.yaml if the run went ahead
    cfg = make_cfg(tmp_path, {"solver": {"max_iter": 4}}, overrides=["eval.period=2"])
    result = train(cfg, out, resume=True)
    printed = capsys.readouterr().out
    assert "holds a finished run: trained to iteration 4" in printed
    assert "--resume solver.max_iter=8" in printed  # how to train further
    assert result["iteration"] == 4 and result["output_dir"] == str(out)
    # no final evaluation, no model rewritten, no config.yaml, no second event file
    assert _files(out) == before
    assert not (out / LOCK_NAME).exists()


# ----------------------------------------------------- 4. model files carry the fingerprint


@pytest.mark.slow
def test_model_final_carries_the_fingerprint(tmp_path, trained_run):
    from detector.models import build_detector

    path = trained_run / "model_final.pth"
    obj = torch.load(path, weights_only=True)
    assert obj["format"] == "smalldet-model" and obj["version"] == 1 and obj["iteration"] == 4
    assert {"model", "fingerprint", "signature", "config"} <= set(obj)
    cfg = load_config(trained_run / "config.yaml")
    model = build_detector(cfg, num_classes=cfg.model.num_classes)
    load_model_weights(model, path, cfg, cfg.model.num_classes)  # its own config: fine
    n = cfg.model.num_classes
    c5 = load_config(trained_run / "config.yaml", ["model.variant=c5"])
    with pytest.raises(CheckpointError, match="variant: 'dc5' vs 'c5'") as e:
        load_model_weights(model, path, c5, n)
    assert "dilations" in str(e.value)
    anchors = load_config(trained_run / "config.yaml", ["model.anchors.sizes=[4, 8, 16]"])
    with pytest.raises(CheckpointError, match="anchor_sizes"):
        check_fingerprint(obj, anchors, n, path)
    rates = load_config(trained_run / "config.yaml", ["model.backbone.dilations={layer4: [1, 2]}"])
    with pytest.raises(CheckpointError, match="dilations"):
        check_fingerprint(obj, rates, n, path)
    nms = load_config(trained_run / "config.yaml", ["model.rpn.nms_thresh=0.5"])
    check_fingerprint(obj, nms, n, path)  # inference settings do not change the weights
    # a bare state dict (older runs) still loads
    atomic_save(obj["model"], tmp_path / "bare.pth")
    load_model_weights(model, tmp_path / "bare.pth", c5, n)


# ---------------------------------------- 5. model_final.pth is written before the final eval


@pytest.mark.slow
def test_failing_final_eval_keeps_the_model_and_names_the_images(tmp_path, make_cfg):
    extra = {"solver": {"max_iter": 2}, "eval": {"final": True}, "checkpoint": {"period": 0}}
    out = tmp_path / "run"
    t = Trainer(make_cfg(tmp_path, extra), out)
    try:
        t.setup()
        model = unwrap(t.model)
        forward = model.forward

        def broken(images, targets=None):
            if not model.training:
                raise RuntimeError("CUDA error: an illegal memory access")
            return forward(images, targets)

        model.forward = broken
        first_id = t.val_ds.image_ids[0]
        with pytest.raises(EvaluationFailed) as e:
            t._run()
    finally:
        t.close()
    msg = str(e.value)
    assert isinstance(e.value, SmalldetError) and "\n" not in msg
    assert msg.startswith("final evaluation at iteration 2 failed on val image(s)")
    assert f"{first_id} (file " in msg and "illegal memory access" in msg
    assert f"smalldet evaluate --config {out / 'config.yaml'} --checkpoint" in msg
    saved = torch.load(out / "model_final.pth", weights_only=True)
    assert saved["iteration"] == 2
    assert not (out / LOCK_NAME).exists()


# ---------------------------------------------------------------- 6. stale temp files


def test_stale_temp_files_are_removed_at_start(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    stale = out / ".model_0000500.pth.a8f3k2.tmp"
    stale.write_bytes(b"\0" * 4096)
    lock, _ = claim_run_dir(out, resume=True, overwrite=False)
    assert not stale.exists() and (out / LOCK_NAME).exists()
    lock.unlink()


# --------------------------------------------------------------- 7. a bad last_checkpoint


def test_a_pointer_to_a_missing_checkpoint_is_named(tmp_path):
    mgr = CheckpointManager(tmp_path, keep_last=3)
    for it in (2, 4):
        mgr.save({"iteration": it}, it)
    (tmp_path / "last_checkpoint").write_text("model_0000006.pth\n")
    with pytest.raises(CheckpointError) as e:
        mgr.latest()  # not a silent fall-back to model_0000004.pth
    msg = str(e.value)
    assert str(tmp_path / "last_checkpoint") in msg and "model_0000006.pth" in msg
    assert "model_0000004.pth" in msg and "delete" in msg
    (tmp_path / "last_checkpoint").write_text("../../etc/passwd")
    with pytest.raises(CheckpointError, match="should name a checkpoint"):
        mgr.latest()


@pytest.mark.slow
def test_a_corrupt_resume_checkpoint_names_the_way_back(tmp_path, trained_run, make_cfg):
    out = _copy(trained_run, tmp_path)
    data = (out / "model_0000004.pth").read_bytes()
    (out / "model_0000004.pth").write_bytes(data[: len(data) // 3])
    with pytest.raises(CheckpointError) as e:
        train(make_cfg(tmp_path), out, resume=True)
    msg = str(e.value)
    assert "last_checkpoint names model_0000004.pth" in msg and "corrupt or truncated" in msg
    assert "previous checkpoint model_0000002.pth" in msg
    assert not (out / LOCK_NAME).exists()


# ------------------------------------------------------------------ 8. unwritable, full disk


def test_an_unwritable_output_dir_is_a_clear_error(tmp_path, make_cfg, monkeypatch):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(RunDirError) as e:
        train(make_cfg(tmp_path), tmp_path / "file" / "run")
    assert "ENOTDIR" in str(e.value) and str(tmp_path / "file" / "run") in str(e.value)
    assert "Fix:" in str(e.value)

    def read_only(path):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))

    monkeypatch.setattr("detector.engine.rundir.take_lock", read_only)
    with pytest.raises(RunDirError, match=r"run lock .*\(EROFS\). Fix: .*read-only"):
        train(make_cfg(tmp_path), tmp_path / "ro")
    monkeypatch.undo()

    def full(cfg, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("detector.engine.trainer.save_config", full)
    with pytest.raises(RunDirError, match=r"config.yaml: No space left on device \(ENOSPC\)"):
        train(make_cfg(tmp_path), tmp_path / "full")
    assert not (tmp_path / "full" / LOCK_NAME).exists()


def test_a_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    mgr = CheckpointManager(tmp_path, keep_last=2)
    mgr.save({"iteration": 2, "w": torch.ones(3)}, 2)
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"\0" * 1000)  # part of the file got written
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError) as e:
        mgr.save({"iteration": 4}, 4)
    monkeypatch.setattr(torch, "save", real_save)
    msg = str(e.value)
    assert "model_0000004.pth" in msg and "ENOSPC" in msg
    assert f"previous checkpoint {tmp_path / 'model_0000002.pth'} is intact" in msg
    assert "free space" in msg and "--resume" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_checkpoint", "model_0000002.pth"]
    assert mgr.latest().name == "model_0000002.pth"
    assert torch.load(mgr.latest(), weights_only=True)["iteration"] == 2


# ------------------------------------------------------------- 9. the loader's batch size


def test_train_loader_gets_the_micro_batch_not_a_rewritten_config(
    tmp_path,
    make_cfg,
    monkeypatch,
):
    import detector.data

    calls = []
    real = detector.data.build_train_loader

    def spy(cfg, dataset, **kw):
        calls.append((cfg.solver.ims_per_batch, kw))
        return real(cfg, dataset, **kw)

    monkeypatch.setattr(detector.data, "build_train_loader", spy)
    cfg = make_cfg(tmp_path, {"solver": {"ims_per_batch": 2, "accumulate": 2}})
    t = Trainer(cfg, tmp_path / "run")
    try:
        t.setup()
    finally:
        t.close()
    (ims, kw), *_ = calls
    assert ims == 2 and kw["batch_size"] == 1 and kw["start_batch"] == 0
