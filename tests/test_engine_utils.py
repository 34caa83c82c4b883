"""Optimizer groups and LR schedule; plus the tiny-run helpers the other engine tests import."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from detector.config import load_config
from detector.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "tools" / "train.py"

# A detector small enough for a few CPU iterations per second: 64 px images, R18 DC5 with GN.
TINY = {
    "_base_": str(ROOT / "configs" / "faster_rcnn_r18_dc5.yaml"),
    "deterministic": True,
    "model": {
        "backbone": {"gn_groups": 8, "hdc_check": "off", "reduce_channels": 64},
        "anchors": {"sizes": [8, 16, 32], "aspect_ratios": [1.0]},
        "rpn": {
            "pre_nms_top_n_train": 200,
            "post_nms_top_n_train": 100,
            "pre_nms_top_n_test": 100,
            "post_nms_top_n_test": 50,
            "batch_size_per_image": 64,
        },
        "roi": {"batch_size_per_image": 32, "representation_size": 64},
    },
    "data": {"num_workers": 0, "builtin": {"num_train": 8, "num_val": 4, "image_size": 64}},
    "solver": {"max_iter": 6, "ims_per_batch": 2, "warmup_iters": 2, "lr": 0.01},
    "checkpoint": {"period": 2, "keep_last": 2},
    "eval": {"period": 0, "final": False, "vis_images": 0},
    "log": {"period": 2, "progress": False},
}


def tiny_config(path: Path, cache_dir: Path, extra: dict | None = None) -> Path:
    """Write the tiny config (deep-merged with ``extra``) to ``path``."""
    from detector.config.loader import deep_merge

    data = deep_merge(TINY, {"data": {"builtin": {"cache_dir": str(cache_dir)}}})
    data = deep_merge(data, extra or {})
    path.write_text(yaml.safe_dump(data))
    return path


def run_train(cfg_path: Path, out: Path, *args: str, env: dict | None = None, timeout=300):
    full_env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", **(env or {})}
    return subprocess.run(
        [sys.executable, str(TRAIN), "--config", str(cfg_path), "--output", str(out), *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("smalldet_cache")


# --------------------------------------------------------------------------------- the tests


def _cfg(*overrides):
    return load_config(None, list(overrides))


def test_no_decay_groups_hold_norms_and_biases():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.GroupNorm(2, 8), torch.nn.Linear(8, 2)
    )
    decay, no_decay = param_groups(model, 1e-4, True)
    assert {p.ndim for p in decay["params"]} == {4, 2}
    assert len(no_decay["params"]) == 4 and no_decay["weight_decay"] == 0.0
    assert len(param_groups(model, 1e-4, False)) == 1


def test_warmup_then_multistep():
    cfg = _cfg("solver.warmup_iters=10", "solver.warmup_factor=0.1", "solver.steps=[0.5, 80]")
    f = lr_factor(cfg, 100)
    assert f(0) == pytest.approx(0.1)
    assert f(5) == pytest.approx(0.55)
    assert f(10) == pytest.approx(1.0)
    assert (
        f(49) == pytest.approx(1.0) and f(50) == pytest.approx(0.1) and f(80) == pytest.approx(0.01)
    )


def test_cosine_reaches_floor():
    cfg = _cfg("solver.schedule=cosine", "solver.warmup_iters=0", "solver.min_lr_factor=0.05")
    f = lr_factor(cfg, 100)
    assert (
        f(0) == pytest.approx(1.0)
        and f(50) == pytest.approx(0.525)
        and f(100) == pytest.approx(0.05)
    )


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_optimizer_and_scheduler_step(name):
    cfg = _cfg(f"solver.optimizer={name}", "solver.lr=0.1", "solver.warmup_iters=2")
    model = torch.nn.Linear(4, 2)
    opt = build_optimizer(cfg, model)
    sched = build_scheduler(cfg, opt, 10)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.1 * cfg.solver.warmup_factor)
    model(torch.ones(1, 4)).sum().backward()
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] > 0.1 * cfg.solver.warmup_factor


def test_micro_batch_is_global_batch_over_ranks_and_accumulation():
    from detector.engine.trainer import micro_batch_size

    assert micro_batch_size(_cfg("solver.ims_per_batch=8", "solver.accumulate=2"), 2) == 2
    with pytest.raises(ValueError, match="divisible by world_size"):
        micro_batch_size(_cfg("solver.ims_per_batch=6", "solver.accumulate=2"), 2)
