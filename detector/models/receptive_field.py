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


def extend_receptive_field(module: nn.Module, rf: int, jump: int) -> tuple[int, int]:
    """``(rf, jump)`` after the convs/pools of ``module`` applied to a map that has ``rf`` and
    ``jump`` already. For plain chains only (a conv, a ``Conv2dNormActivation``, a
    ``Sequential``): their registration order is their execution order, so no walk is run."""
    for m in module.modules():
        if isinstance(m, _LAYERS):
            k, s = _pair(m.kernel_size), _pair(m.stride)
            d = _pair(m.dilation) if hasattr(m, "dilation") else 1
            rf += (effective_kernel(k, d) - 1) * jump
            jump *= s
    return rf, jump


def _map_strides(backbone: nn.Module, input_size: int) -> dict[str, int]:
    """The stride of every map ``backbone`` returns, measured on an ``input_size`` square."""
    p = next(backbone.parameters(), None)
    x = torch.zeros(1, 3, input_size, input_size, device=p.device if p is not None else "cpu")
    was_training = backbone.training
    try:
        backbone.eval()
        with torch.no_grad():
            feats = backbone(x)
    finally:
        backbone.train(was_training)
    return {name: input_size // f.shape[-2] for name, f in feats.items()}


def feature_receptive_fields(backbone: nn.Module, input_size: int = 128) -> dict[str, dict]:
    """``{map name: {rf, jump, stride, path}}`` for every feature map ``backbone`` returns.

    ``rf`` is the theoretical RF (px, one side) of a unit of that map along its bottom-up path
    and ``stride`` the map's stride, measured from its shape (it must equal the walk's ``jump``).
    Derived from the module, not from its variant name:

    * a single-map backbone (c5, dc5, dc4, any rates, with or without ``reduce``): the walk of
      :func:`receptive_field` over the whole chain;
    * a torchvision ``BackboneWithFPN``: level ``i`` (P2..P5) is the returned stage ``C_i`` of
      the body walk, then the FPN's own lateral (1x1: adds nothing) and output (3x3: adds
      ``2 * jump``) convs. The top-down path is left out: it feeds every level the upsampled
      coarser maps, so following it would give every level (nearly) C5's RF. ``LastLevelMaxPool``
      ("pool", P6) subsamples the last level with a 1x1 max-pool of stride 2: same RF, twice
      the jump.
    """
    strides = _map_strides(backbone, input_size)
    out: dict[str, dict] = {}
    if hasattr(backbone, "fpn") and hasattr(backbone, "body"):
        from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

        stages = stage_receptive_fields(backbone)
        fpn = backbone.fpn
        for i, (stage, name) in enumerate(backbone.body.return_layers.items()):
            rf, jump = stages[stage]["rf"], stages[stage]["jump"]
            rf, jump = extend_receptive_field(fpn.inner_blocks[i], rf, jump)
            rf, jump = extend_receptive_field(fpn.layer_blocks[i], rf, jump)
            out[name] = {"rf": rf, "jump": jump, "path": f"{stage} + FPN 1x1 lateral, 3x3 output"}
        extra = [n for n in strides if n not in out]
        if extra:
            if not isinstance(fpn.extra_blocks, LastLevelMaxPool) or len(extra) != 1:
                raise NotImplementedError(
                    f"no receptive-field rule for the FPN extra block "
                    f"{type(fpn.extra_blocks).__name__} (maps {extra}); add one here"
                )
            last = list(out)[-1]
            out[extra[0]] = {
                "rf": out[last]["rf"],
                "jump": out[last]["jump"] * 2,
                "path": f"{last} + 1x1 max-pool, stride 2",
            }
    else:
        if len(strides) != 1:
            raise NotImplementedError(
                f"{type(backbone).__name__} returns {len(strides)} maps but is not an FPN: "
                "no receptive-field rule for it"
            )
        last = receptive_field(backbone, (1, 3, 64, 64))[-1]
        out[next(iter(strides))] = {"rf": last.rf, "jump": last.jump, "path": "backbone chain"}
    for name, level in out.items():
        level["stride"] = strides[name]
        if level["stride"] != level["jump"]:
            raise RuntimeError(
                f"map {name!r}: the RF walk gives jump {level['jump']} but the map has stride "
                f"{level['stride']}; the walk does not follow this backbone's path"
            )
    return {name: {k: out[name][k] for k in ("rf", "jump", "stride", "path")} for name in out}
