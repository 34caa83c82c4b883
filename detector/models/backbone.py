"""Dilated ResNet backbones built from torchvision's ResNet-18/34/50/101.

Output stride: ``c5`` and ``fpn`` keep stride 32; ``dc5`` makes layer4 trade its stride for
dilation (stride 16); ``dc4`` does the same to layer3 too (stride 8).

Dilation rates (``model.backbone.dilations``, e.g. ``{layer4: [1, 2, 5]}``) are set per block:

* Bottleneck (R50/R101) has one 3x3 conv per block, so a stage takes one rate per block.
* BasicBlock (R18/R34) has two 3x3 convs per block: a stage takes one rate per block (used by
  both convs) or one rate per 3x3 conv (``2 * blocks`` rates), so an HDC pattern can span the
  conv stack: R18's layer4 takes ``[1, 2, 5, 9]``.

A stage not named keeps the variant's default: rate 1, or for a stage that traded its stride
the product of the strides traded so far (dc5: layer4 = 2; dc4: layer3 = 2, layer4 = 4), which
keeps each conv's footprint on the input as it was. Padding is always ``rate * (k - 1) / 2``,
so a dilated conv never shrinks its map. Dilation adds no parameters.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

from detector.config.loader import ConfigError

from .hdc import HDCVerdict, check_hdc, enforce_hdc
from .norm import get_norm_layer
from .weights import load_resnet_weights

DEPTHS = {18: resnet.resnet18, 34: resnet.resnet34, 50: resnet.resnet50, 101: resnet.resnet101}
STAGES = ("layer1", "layer2", "layer3", "layer4")
# which stages trade their stride for dilation, per variant
VARIANTS = {"c5": (), "dc5": ("layer4",), "dc4": ("layer3", "layer4"), "fpn": ()}
OUTPUT_STRIDES = {"c5": 32, "dc5": 16, "dc4": 8, "fpn": 32}


def _convs3x3(block: nn.Module) -> list[nn.Conv2d]:
    """The 3x3 convs of a block, in forward order (the main path)."""
    if isinstance(block, resnet.BasicBlock):
        return [block.conv1, block.conv2]
    return [block.conv2]


def expand_rates(stage: nn.Sequential, rates: list, name: str) -> list[int]:
    """One rate per 3x3 conv of ``stage`` from a per-block (or, for BasicBlock, per-conv) list."""
    blocks = len(stage)
    per_block = len(_convs3x3(stage[0]))
    kind = type(stage[0]).__name__
    if not isinstance(rates, (list, tuple)):
        raise ConfigError(f"model.backbone.dilations.{name} must be a list of rates, got {rates!r}")
    for r in rates:
        if isinstance(r, bool) or not isinstance(r, int) or r <= 0:
            raise ConfigError(
                f"model.backbone.dilations.{name}: rates must be positive ints, got {list(rates)}"
            )
    if len(rates) == blocks:
        return [r for r in rates for _ in range(per_block)]
    if per_block > 1 and len(rates) == blocks * per_block:
        return list(rates)
    allowed = f"{blocks} (one per block)"
    if per_block > 1:
        allowed += f" or {blocks * per_block} (one per 3x3 conv)"
    raise ConfigError(
        f"model.backbone.dilations.{name} has {len(rates)} rates but {name} has {blocks} "
        f"{kind}s: give {allowed}"
    )


def set_stage_dilation(stage: nn.Sequential, rates: list[int], trade_stride: bool) -> None:
    """Set the per-conv ``rates`` on ``stage``; ``trade_stride`` turns its stride-2 into 1."""
    if trade_stride:
        first = stage[0]
        for conv in _convs3x3(first):
            conv.stride = (1, 1)
        if first.downsample is not None:
            first.downsample[0].stride = (1, 1)
        first.stride = 1
    convs = [c for block in stage for c in _convs3x3(block)]
    assert len(convs) == len(rates)
    for conv, r in zip(convs, rates):
        k = conv.kernel_size[0]
        conv.dilation = (r, r)
        conv.padding = (r * (k - 1) // 2, r * (k - 1) // 2)


def freeze_layers(body: nn.Module, trainable_layers: int) -> None:
    """Train only the top ``trainable_layers`` stages (0-5, like torchvision; 5 = all)."""
    if not isinstance(trainable_layers, int) or not 0 <= trainable_layers <= 5:
        raise ConfigError(f"model.backbone.trainable_layers must be 0-5, got {trainable_layers!r}")
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for name, p in body.named_parameters():
        p.requires_grad_(any(name.startswith(t) for t in train))


class ResNetBackbone(nn.Module):
    """A ResNet body (stem + layer1..4) with an optional 1x1 channel reduction.

    ``forward`` returns ``OrderedDict(["0", features])``. Attributes: ``out_channels``,
    ``output_stride``, ``rates`` (per-conv rates of each stage), ``hdc`` (:class:`HDCVerdict`).
    """

    def __init__(self, body: nn.Module, out_channels: int, reduce: nn.Module | None):
        super().__init__()
        self.body = body
        self.reduce = reduce
        self.out_channels = out_channels
        self.output_stride = 32
        self.rates: dict[str, list[int]] = {}
        self.hdc: HDCVerdict | None = None

    def forward(self, x: torch.Tensor) -> OrderedDict:
        b = self.body
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        x = b.layer4(b.layer3(b.layer2(b.layer1(x))))
        if self.reduce is not None:
            x = self.reduce(x)
        return OrderedDict([("0", x)])


def hdc_rates(rates: dict[str, list[int]]) -> list[int]:
    """The rates the HDC check sees: every 3x3 conv of every stage that dilates, in order."""
    return [r for name in STAGES if any(x > 1 for x in rates.get(name, ())) for r in rates[name]]


def build_resnet_body(bcfg, variant: str) -> tuple[nn.Module, dict[str, list[int]], HDCVerdict]:
    """A torchvision ResNet (no avgpool/fc) with the variant's strides and the configured rates,
    norm, weights and frozen stages; plus the per-conv rates and the HDC verdict."""
    if variant not in VARIANTS:
        raise ConfigError(f"unknown model.variant {variant!r}; valid: {', '.join(VARIANTS)}")
    depth = bcfg["depth"]
    if depth not in DEPTHS:
        raise ConfigError(
            f"model.backbone.depth {depth!r} is not supported; valid: {', '.join(map(str, DEPTHS))}"
        )
    norm = bcfg.get("norm", "frozen_bn")
    body = DEPTHS[depth](weights=None, norm_layer=get_norm_layer(norm, bcfg.get("gn_groups", 32)))
    del body.avgpool, body.fc  # classification head: not part of the backbone

    dilations = dict(bcfg.get("dilations") or {})
    unknown = sorted(set(dilations) - set(STAGES))
    if unknown:
        raise ConfigError(
            f"model.backbone.dilations: unknown stage(s) {unknown}; valid: {', '.join(STAGES)}"
        )
    traded = VARIANTS[variant]
    rates: dict[str, list[int]] = {}
    factor = 1
    for name in STAGES:
        stage = getattr(body, name)
        trade = name in traded
        if trade:
            factor *= 2
        if name in dilations:
            per_conv = expand_rates(stage, dilations[name], name)
        else:
            per_conv = [factor] * sum(len(_convs3x3(b)) for b in stage)
        set_stage_dilation(stage, per_conv, trade)
        rates[name] = per_conv

    verdict = check_hdc(hdc_rates(rates), kernel=3)
    enforce_hdc(verdict, bcfg.get("hdc_check", "warn"))

    if bcfg.get("weights"):
        load_resnet_weights(body, bcfg["weights"], drop_running_stats=norm == "gn")
    freeze_layers(body, bcfg.get("trainable_layers", 5))
    return body, rates, verdict


def build_backbone(cfg) -> nn.Module:
    """The backbone for ``cfg`` (a full config or its ``model`` section).

    Single-map variants give a :class:`ResNetBackbone`; ``fpn`` gives torchvision's
    ``BackboneWithFPN`` (levels ``"0"``-``"3"`` and ``"pool"``) over the same ResNet.
    Both carry ``out_channels``, ``output_stride``, ``rates`` and ``hdc``. With
    ``model.trident.enabled`` the single-map backbone becomes a
    :class:`~detector.models.trident.TridentBackbone` (same modules, checked per branch).
    """
    mcfg = cfg.get("model", cfg)
    variant = mcfg["variant"]
    bcfg = mcfg["backbone"]
    trident = bool((mcfg.get("trident") or {}).get("enabled"))
    if trident and variant == "fpn":
        raise ConfigError(
            "model.trident.enabled=true needs a single-map variant (c5, dc5, dc4), not fpn"
        )
    # a trident's HDC rules are checked per branch (trident.py), not on the stage's own rates
    body, rates, verdict = build_resnet_body(
        {**bcfg, "hdc_check": "off"} if trident else bcfg, variant
    )
    c5 = body.layer4[-1].conv3.out_channels if hasattr(body.layer4[-1], "conv3") else 512
    if variant == "fpn":
        return_layers = {name: str(i) for i, name in enumerate(STAGES)}
        in_channels = [c5 // 8, c5 // 4, c5 // 2, c5]
        model = BackboneWithFPN(
            body,
            return_layers,
            in_channels,
            bcfg.get("fpn_channels", 256),
            extra_blocks=LastLevelMaxPool(),
        )
    else:
        red = bcfg.get("reduce_channels", 0) or 0
        if not isinstance(red, int) or red < 0:
            raise ConfigError(f"model.backbone.reduce_channels must be an int >= 0, got {red!r}")
        reduce = None
        if red:
            norm_layer = get_norm_layer(bcfg.get("norm", "frozen_bn"), bcfg.get("gn_groups", 32))
            reduce = nn.Sequential(
                nn.Conv2d(c5, red, 1, bias=False), norm_layer(red), nn.ReLU(inplace=True)
            )
        model = ResNetBackbone(body, red or c5, reduce)
    model.output_stride = OUTPUT_STRIDES[variant]
    model.rates = rates
    model.hdc = verdict
    if trident:
        from .trident import make_trident_backbone  # trident.py builds on this module

        model = make_trident_backbone(model, mcfg)
    return model


STRIDE_VARIANTS = {32: "c5", 16: "dc5", 8: "dc4"}


def variant_for_output_stride(output_stride: int, depth: int = 50) -> str:
    """``32 -> "c5"``, ``16 -> "dc5"``, ``8 -> "dc4"``; any other stride is an error."""
    if output_stride not in STRIDE_VARIANTS:
        strides = ", ".join(map(str, STRIDE_VARIANTS))
        raise ConfigError(
            f"ResNet-{depth} cannot give output stride {output_stride!r}: only {strides} "
            "(plain C5, layer4 dilated, layer3+layer4 dilated)"
        )
    return STRIDE_VARIANTS[output_stride]


def build_resnet(
    depth: int = 50,
    output_stride: int = 32,
    dilations: dict | None = None,
    norm: str = "frozen_bn",
    hdc_check: str = "warn",
    weights: str | None = None,
    trainable_layers: int = 5,
    reduce_channels: int = 0,
    gn_groups: int = 32,
) -> ResNetBackbone:
    """Keyword front end of :func:`build_backbone` for a single-map backbone."""
    variant = variant_for_output_stride(output_stride, depth)
    return build_backbone(
        {
            "variant": variant,
            "backbone": {
                "depth": depth,
                "dilations": dilations or {},
                "hdc_check": hdc_check,
                "norm": norm,
                "gn_groups": gn_groups,
                "weights": weights,
                "trainable_layers": trainable_layers,
                "reduce_channels": reduce_channels,
            },
        }
    )
