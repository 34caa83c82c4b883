"""Norm layers chosen by ``model.backbone.norm``: frozen BN, BN, GN and SyncBN.

``syncbn`` builds ordinary ``BatchNorm2d`` layers; on a single process they behave as BN. The
trainer converts them under DDP with :func:`convert_sync_batchnorm` (after the model is on its
device and before it is wrapped in ``DistributedDataParallel``).
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from detector.config.loader import ConfigError

NORMS = ("frozen_bn", "bn", "gn", "syncbn")


def get_norm_layer(norm: str, gn_groups: int = 32) -> Callable[[int], nn.Module]:
    """A callable ``channels -> norm module`` for ``norm`` (one of :data:`NORMS`)."""
    if norm == "frozen_bn":
        return FrozenBatchNorm2d
    if norm in ("bn", "syncbn"):
        return nn.BatchNorm2d
    if norm == "gn":
        if not isinstance(gn_groups, int) or gn_groups <= 0:
            raise ConfigError(f"model.backbone.gn_groups must be a positive int, got {gn_groups!r}")

        def group_norm(channels: int) -> nn.Module:
            if channels % gn_groups:
                raise ConfigError(
                    f"GroupNorm: {channels} channels are not divisible by "
                    f"model.backbone.gn_groups={gn_groups}"
                )
            return nn.GroupNorm(gn_groups, channels)

        return group_norm
    raise ConfigError(f"unknown model.backbone.norm {norm!r}; valid: {', '.join(NORMS)}")


def convert_sync_batchnorm(model: nn.Module, norm: str) -> nn.Module:
    """Turn BN layers into SyncBN when ``norm == "syncbn"`` (call only under DDP)."""
    if norm == "syncbn":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model
