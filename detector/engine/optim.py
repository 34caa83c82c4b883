"""Optimizer (SGD with momentum or AdamW, optional no-decay groups) and the LR schedule.

The schedule is a :class:`torch.optim.lr_scheduler.LambdaLR` stepped once per iteration: a
linear warm-up from ``warmup_factor * lr`` to ``lr`` over ``warmup_iters`` iterations, then
either a multi-step decay (``gamma`` at each of ``steps``) or a cosine decay down to
``min_lr_factor * lr`` at ``max_iter``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from detector.config.loader import ConfigError

NORM_TYPES = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
    nn.LocalResponseNorm,
)


def param_groups(model: nn.Module, weight_decay: float, no_decay_norm_bias: bool) -> list[dict]:
    """Split trainable parameters into a decayed group and a no-decay group (norms, biases)."""
    decay, no_decay, seen = [], [], set()
    for module in model.modules():
        is_norm = isinstance(module, NORM_TYPES) or "norm" in type(module).__name__.lower()
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            if no_decay_norm_bias and (is_norm or name == "bias" or p.ndim <= 1):
                no_decay.append(p)
            else:
                decay.append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(cfg, model: nn.Module) -> torch.optim.Optimizer:
    s = cfg.solver
    groups = param_groups(model, s.weight_decay, s.no_decay_norm_bias)
    fused = {"fused": True} if s.get("fused") else {}
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=s.lr, momentum=s.momentum, **fused)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=s.lr, betas=tuple(s.betas), **fused)
    raise ConfigError(f"solver.optimizer={s.optimizer!r}: use 'sgd' or 'adamw'")


def milestones(steps: list, max_iter: int) -> list[int]:
    """Multistep milestones: floats below 1 are fractions of ``max_iter``; others iterations."""
    out = []
    for s in steps:
        if isinstance(s, float) and 0 < s < 1:
            out.append(int(round(s * max_iter)))
        else:
            out.append(int(s))
    return sorted(out)


def lr_factor(cfg, max_iter: int):
    """The multiplier of ``solver.lr`` at each iteration, as a function for LambdaLR."""
    s = cfg.solver
    if s.schedule not in ("multistep", "cosine"):
        raise ConfigError(f"solver.schedule={s.schedule!r}: use 'multistep' or 'cosine'")
    warmup = max(0, min(int(s.warmup_iters), max_iter))
    marks = milestones(s.steps, max_iter)

    def factor(it: int) -> float:
        if it < warmup:
            alpha = it / warmup
            warm = s.warmup_factor * (1 - alpha) + alpha
        else:
            warm = 1.0
        if s.schedule == "multistep":
            return warm * s.gamma ** sum(1 for m in marks if it >= m)
        span = max(1, max_iter - warmup)
        progress = min(1.0, max(0.0, (it - warmup) / span))
        cos = 0.5 * (1 + math.cos(math.pi * progress))
        return warm * (s.min_lr_factor + (1 - s.min_lr_factor) * cos)

    return factor


def build_scheduler(cfg, optimizer: torch.optim.Optimizer, max_iter: int):
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor(cfg, max_iter))
