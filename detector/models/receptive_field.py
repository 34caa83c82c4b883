"""Theoretical receptive field (RF), jump and effective kernel of every layer of a real module.

The walk runs the module once on a small input with forward hooks on every ``Conv2d``,
``MaxPool2d`` and ``AvgPool2d`` and takes them in the order they execute; there is no hand-kept
table. Per layer, with ``k' = k + (k - 1)(d - 1)`` the effective kernel::

    RF_l = RF_{l-1} + (k'_l - 1) * jump_{l-1}        jump_l = jump_{l-1} * s_l

Residual blocks: the RF is followed along the main (conv) path. The skip path of a ResNet block
is the identity or a 1x1 projection (``downsample``) with the block's stride; its RF is never
larger than the main path's, and its stride is already counted by the main path. So modules
whose qualified name has a component in ``skip`` (default ``("downsample",)``) are left out:
counting them would apply the block's stride twice. FPN lateral/output convs are not on the
path of the C5 map either; the per-stage helpers walk the ResNet body only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

_LAYERS = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)


def _pair(v) -> int:
    if isinstance(v, (tuple, list)):
        if len(set(v)) != 1:
            raise ValueError(f"only square kernels/strides/dilations are supported, got {v}")
        return int(v[0])
    return int(v)


@dataclass
class LayerRF:
    name: str
    kind: str
    kernel: int
    stride: int
    dilation: int
    k_eff: int  # k + (k - 1)(d - 1)
    rf: int  # receptive field after this layer (input pixels, one side)
    jump: int  # distance in input pixels between neighbouring outputs of this layer

    def to_dict(self) -> dict:
        return asdict(self)


def effective_kernel(k: int, d: int) -> int:
    return k + (k - 1) * (d - 1)


def receptive_field(
    module: nn.Module,
    input_size: tuple[int, ...] = (1, 3, 64, 64),
    skip: tuple[str, ...] = ("downsample",),
) -> list[LayerRF]:
    """RF, jump and k' after each conv/pool of ``module``, in forward (execution) order."""
    order: list[tuple[str, nn.Module]] = []
    names = {m: n for n, m in module.named_modules()}
    handles = []
    for name, m in module.named_modules():
        if isinstance(m, _LAYERS) and not set(name.split(".")) & set(skip):
            handles.append(
                m.register_forward_hook(lambda mod, i, o: order.append((names[mod], mod)))
            )
    p = next(module.parameters(), None)
    x = torch.zeros(input_size, device=p.device if p is not None else "cpu")
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            module(x)
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    out, rf, jump = [], 1, 1
    for name, m in order:
        k, s = _pair(m.kernel_size), _pair(m.stride)
        d = _pair(m.dilation) if hasattr(m, "dilation") else 1  # AvgPool2d has none
        ke = effective_kernel(k, d)
        rf += (ke - 1) * jump
        jump *= s
        out.append(LayerRF(name, type(m).__name__, k, s, d, ke, rf, jump))
    return out


def dilated_stack(kernel: int, dilations: list[int], channels: int = 1) -> nn.Sequential:
    """Stacked ``kernel``x``kernel`` convs with the given rates; padding keeps the size."""
    return nn.Sequential(
        *[
            nn.Conv2d(channels, channels, kernel, padding=d * (kernel - 1) // 2, dilation=d)
            for d in dilations
        ]
    )


def stage_receptive_fields(backbone: nn.Module, input_size: int = 64) -> dict[str, dict]:
    """``{stem, layer1..layer4[, reduce]: {rf, jump}}`` after each stage of a ResNet backbone
    (a :class:`ResNetBackbone`, a ``BackboneWithFPN`` whose C2-C5 path is walked, or a plain
    torchvision ResNet)."""
    module = backbone
    if hasattr(backbone, "fpn"):  # BackboneWithFPN: walk its IntermediateLayerGetter only
        module = backbone.body
    layers = receptive_field(module, (1, 3, input_size, input_size))
    stats: dict[str, dict] = {}
    for layer in layers:
        parts = layer.name.split(".")
        stage = next((p for p in parts if p.startswith("layer") or p == "reduce"), "stem")
        stats[stage] = {"rf": layer.rf, "jump": layer.jump}
    return stats
