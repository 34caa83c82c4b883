"""End-to-end training runs on a tiny config (64 px synthetic images, R18 DC5 with GN, CPU).

- a run SIGKILLed mid-way and resumed ends bit-identical to an uninterrupted run;
- a non-finite loss stops the run naming iteration and component, keeping the last checkpoint;
- SIGTERM writes a checkpoint and exits with 143;
- the TensorBoard event files hold the losses, the lr, per-size-bin eval scalars and images;
- ``model_final.pth`` (a model file with the fingerprint) and a full training checkpoint give
  the same predictions.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from detector.config import load_config

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "tools" / "train.py"


def test_sigkill_then_resume_is_bit_identical(tmp_path, tiny_cache, tiny_config, run_train):
    cfg = tiny_config(tmp_path / "tiny.yaml", tiny_cache)
    a = run_train(cfg, tmp_path / "a")
    assert a.returncode == 0, a.stderr[-3000:]

    b = run_train(cfg, tmp_path / "b", env={"SMALLDET_KILL_AT_ITER": "5"})
    assert b.returncode == -signal.SIGKILL, b.stderr[-3000:]
    assert not (tmp_path / "b" / "model_final.pth").exists()
    assert (tmp_path / "b" / "last_checkpoint").read_text().strip() == "model_0000004.pth"

    b2 = run_train(cfg, tmp_path / "b", "--resume")
    assert b2.returncode == 0, b2.stderr[-3000:]
    assert "resumed from" in b2.stdout and "at iteration 4" in b2.stdout

    # metrics.jsonl: the rows the killed run wrote after its checkpoint were dropped on resume
    rows = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["iteration"] for r in rows if r["type"] == "train"] == [2, 4, 6]

    # model_final.pth is a smalldet-model file: the weights plus the config fingerprint
    fa = torch.load(tmp_path / "a" / "model_final.pth", weights_only=True)
    fb = torch.load(tmp_path / "b" / "model_final.pth", weights_only=True)
    assert fa["format"] == "smalldet-model" and fa["fingerprint"] == fb["fingerprint"]
    wa, wb = fa["model"], fb["model"]
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"
    # the optimizer state matches too
    ca = torch.load(tmp_path / "a" / "model_0000006.pth", weights_only=True)
    cb = torch.load(tmp_path / "b" / "model_0000006.pth", weights_only=True)
    for sa, sb in zip(ca["optimizer"]["state"].values(), cb["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path, tiny_cache, tiny_config, run_train
):
    # a real blow-up: from iteration 5 the lr is multiplied by 1e30
    extra = {
        "solver": {"optimizer": "sgd", "max_iter": 10, "steps": [4], "gamma": 1.0e30},
        "checkpoint": {"period": 4},
    }
    cfg = tiny_config(tmp_path / "nan.yaml", tiny_cache, extra)
    out = tmp_path / "run"
    proc = run_train(cfg, out)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-3000:]
    m = re.search(r"iteration (\d+): (loss_\w+) is (nan|inf|-inf)", proc.stderr)
    assert m, proc.stderr[-3000:]
    failed_at = int(m.group(1))
    assert failed_at > 4
    assert "Last good checkpoint" in proc.stderr and "model_0000004.pth" in proc.stderr
    assert not (out / "model_final.pth").exists()
    ckpts = sorted(p.name for p in out.glob("model_*.pth"))
    assert ckpts == ["model_0000004.pth"]
    state = torch.load(out / "model_0000004.pth", weights_only=True)
    assert state["iteration"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_sigterm_saves_a_checkpoint(tmp_path, tiny_cache, tiny_config):
    cfg = tiny_config(
        tmp_path / "t.yaml",
        tiny_cache,
        {"solver": {"max_iter": 200}, "checkpoint": {"period": 0}, "log": {"period": 1}},
    )
    out = tmp_path / "run"
    env = {"PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore"}
    import os

    proc = subprocess.Popen(
        [sys.executable, str(TRAIN), "--config", str(cfg), "--output", str(out)],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and not (metrics.exists() and metrics.read_text().strip()):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "SIGTERM" in err
    ckpt = (out / "last_checkpoint").read_text().strip()
    state = torch.load(out / ckpt, weights_only=True)
    assert 1 <= state["iteration"] < 200


def test_tensorboard_events_and_final_checkpoint_forms(tmp_path, tiny_cache, tiny_config):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from detector.engine.inference import run_inference
    from detector.engine.trainer import train

    path = tiny_config(
        tmp_path / "tb.yaml",
        tiny_cache,
        {
            "deterministic": False,
            # 2 micro-batches of 1 image per iteration, with gradient clipping
            "solver": {"max_iter": 4, "accumulate": 2, "clip_grad_norm": 5.0},
            "eval": {"period": 2, "final": True, "vis_images": 2},
            "checkpoint": {"period": 0, "best_metric": "AP_small"},
        },
    )
    cfg = load_config(path)
    out = tmp_path / "run"
    final = train(cfg, out)
    assert final["iteration"] == 4 and "AP_small" in final

    acc = EventAccumulator(str(out / "tb"), size_guidance={"images": 0, "scalars": 0})
    acc.Reload()
    scalars = set(acc.Tags()["scalars"])
    for tag in (
        "train/loss/total",
        "train/loss/loss_classifier",
        "train/lr",
        "train/img_per_s",
        "train/data_time",
        "train/compute_time",
        "train/memory_mb",
    ):
        assert tag in scalars, sorted(scalars)
    assert "eval/AP/small" in scalars and any(t.startswith("eval/AR@100/") for t in scalars)
    assert [e.step for e in acc.Scalars("eval/AP/small")] == [2, 4]
    assert len(acc.Scalars("train/loss/total")) == 2
    images = set(acc.Tags()["images"])
    assert {"val_images/0", "val_images/1"} <= images
    assert "eval/pr_curves_iou50" in images  # per-size PR curves, as a figure
    assert "hparam/AP_small" in scalars  # the HParams metrics of the run

    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in rows if r["type"] == "eval"]
    assert [r["iteration"] for r in evals] == [2, 4]
    assert evals[-1]["num_images"] == evals[-1]["num_unique_images"] == 4
    assert (out / "model_best.pth").exists() and (out / "config.yaml").exists()

    # tools/evaluate.py --checkpoint: the bare state dict and a training checkpoint agree
    saved = load_config(out / "config.yaml")
    r_final, gt = run_inference(saved, out / "model_final.pth")
    r_full, _ = run_inference(saved, out / "model_0000004.pth")
    assert r_final == r_full and gt.endswith(".json")
