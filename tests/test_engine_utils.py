"""Optimizer groups and LR schedule (the tiny-run helpers are fixtures in conftest.py)."""

from __future__ import annotations

import pytest
import torch

from detector.config import load_config
from detector.engine.optim import build_optimizer, build_scheduler, lr_factor, param_groups


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
