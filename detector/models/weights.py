"""Load torchvision ResNet weights into a backbone body: from a local file or a weights enum.

A local file holds a torchvision ResNet state dict (``torch.save(resnet.state_dict(), f)``),
read with ``torch.load(weights_only=True)``. ``fc.*`` is ignored (the classifier is dropped),
and so is ``num_batches_tracked``; with GroupNorm the BN running statistics are dropped (GN
keeps BN's affine weight and bias). Any other missing or unexpected key, or a shape mismatch,
is an error that names the file and the keys.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from detector.config.loader import ConfigError


class WeightsError(ConfigError):
    """Weights that cannot be loaded into the backbone as configured."""


def _ignored(key: str, drop_running_stats: bool) -> bool:
    if key.startswith("fc.") or key.endswith("num_batches_tracked"):
        return True
    return drop_running_stats and key.endswith(("running_mean", "running_var"))


def _list(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def read_state_dict(spec: str) -> tuple[dict, str]:
    """The state dict named by ``spec`` (a path, or an enum like ``ResNet50_Weights.IMAGENET1K_V1``)
    and a description of where it came from."""
    path = Path(spec).expanduser()
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001 - any unreadable file gets the same message
            raise WeightsError(f"cannot read weights file {path}: {err}") from None
        if isinstance(state, dict):
            for wrapper in ("state_dict", "model"):
                if isinstance(state.get(wrapper), dict) and len(state) <= 3:
                    state = state[wrapper]
                    break
        if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
            raise WeightsError(f"{path} does not hold a state dict of tensors")
        return state, str(path)
    if "_Weights." not in spec:
        raise WeightsError(
            f"model.backbone.weights: no such file {spec!r} (give a local torchvision ResNet "
            "state dict, or a weights enum such as 'ResNet50_Weights.IMAGENET1K_V1')"
        )
    from torchvision.models import get_weight

    try:
        weights = get_weight(spec)
    except (ValueError, KeyError, AttributeError) as err:
        raise WeightsError(
            f"model.backbone.weights: unknown torchvision weights {spec!r}: {err}"
        ) from None
    try:
        state = weights.get_state_dict(progress=False)
    except Exception as err:  # noqa: BLE001 - network errors come in many types
        raise WeightsError(
            f"could not download {spec} ({type(err).__name__}: {err}); without internet access, "
            "save a torchvision ResNet state dict to a file and pass its path as "
            "model.backbone.weights"
        ) from None
    return state, spec


def load_resnet_weights(body: nn.Module, spec: str, drop_running_stats: bool = False) -> None:
    """Load the ResNet weights named by ``spec`` into ``body`` (a torchvision ResNet, no fc)."""
    state, source = read_state_dict(spec)
    own = {k: v for k, v in body.state_dict().items() if not _ignored(k, drop_running_stats)}
    given = {k: v for k, v in state.items() if not _ignored(k, drop_running_stats)}
    missing = sorted(set(own) - set(given))
    unexpected = sorted(set(given) - set(own))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing keys ({len(missing)}): {_list(missing)}")
        if unexpected:
            parts.append(f"unexpected keys ({len(unexpected)}): {_list(unexpected)}")
        raise WeightsError(
            f"weights {source} do not match the backbone (is it a ResNet of the configured "
            f"depth?): " + "; ".join(parts)
        )
    bad = [
        f"{k}: file {tuple(given[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if tuple(given[k].shape) != tuple(v.shape)
    ]
    if bad:
        raise WeightsError(f"weights {source}: shape mismatch for {_list(bad, 10)}")
    body.load_state_dict(given, strict=False)
