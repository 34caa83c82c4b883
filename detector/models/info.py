"""``model_info(cfg, input_size)``: parameters, FLOPs, stride, feature size, per-stage receptive
fields and the HDC verdict of a configured model (used by ``tools/model_info.py``); for a
trident (``model.trident``) also ``trident`` and ``branches``: per branch its rates, receptive
field, ERF size, scale range, HDC verdict and gridding coverage."""

from __future__ import annotations

import warnings

import torch
from torch.utils.flop_counter import FlopCounterMode

from .detector import build_detector, count_parameters
from .receptive_field import stage_receptive_fields
from .trident import TridentFasterRCNN, describe_branches, trident_summary


def count_flops(module: torch.nn.Module, *inputs) -> int:
    """FLOPs of one forward pass (``torch.utils.flop_counter``; a multiply-add counts 2)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*inputs)
    return int(counter.get_total_flops())


def model_info(cfg, input_size: tuple[int, int] = (512, 512), detector_flops: bool = False) -> dict:
    """A JSON-able summary of the model ``cfg`` describes, at an ``input_size`` (H, W) input.

    ``flops`` is the backbone's forward pass at batch 1 (exact, input independent).
    ``detector_flops=True`` adds ``flops_detector``: the whole detector in eval mode, which also
    depends on how many proposals survive (random weights usually keep the maximum).

    A trident's ``flops`` run every branch (a training step's backbone cost); its top-level
    ``dilations`` and ``receptive_field`` are those of ``trident.default_branch`` (what the
    backbone runs alone), ``hdc`` is valid when every branch is, and ``branches`` lists each.
    """
    mcfg = cfg.get("model", cfg)
    h, w = (int(s) for s in input_size)
    num_classes = mcfg["num_classes"] or 1
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the verdict is reported below instead
        detector = build_detector(mcfg, num_classes=num_classes).eval()
    backbone = detector.backbone
    x = torch.zeros(1, 3, h, w)
    with torch.no_grad():
        feats = backbone(x)
    info = {
        "variant": mcfg["variant"],
        "depth": mcfg["backbone"]["depth"],
        "norm": mcfg["backbone"]["norm"],
        "input_size": [h, w],
        "params": count_parameters(detector),
        "params_backbone": count_parameters(detector.backbone),
        "params_trainable": sum(p.numel() for p in detector.parameters() if p.requires_grad),
        "flops": count_flops(backbone, x),
        # the configured stride of the C5 map (FPN: of level "3"); every map's measured stride:
        "output_stride": backbone.output_stride,
        "feature_strides": {k: h // v.shape[-2] for k, v in feats.items()},
        "feature_size": {k: list(v.shape[1:]) for k, v in feats.items()},
        "out_channels": backbone.out_channels,
        "dilations": backbone.rates,
        "receptive_field": stage_receptive_fields(backbone, input_size=64),
        "hdc": {**backbone.hdc.to_dict(), "mode": mcfg["backbone"]["hdc_check"]},
    }
    if isinstance(detector, TridentFasterRCNN):
        info["flops"] = count_flops(backbone, x, list(range(backbone.num_branches)))
        info["trident"] = trident_summary(detector)
        info["branches"] = describe_branches(detector)
    if detector_flops:
        info["flops_detector"] = count_flops(detector, [torch.rand(3, h, w)])
    return info


def _format_branches(info: dict) -> list[str]:
    t = info["trident"]
    test = "all branches merged by NMS" if t["test_branch"] < 0 else f"branch {t['test_branch']}"
    lines = [
        f"trident: {t['stage']} x {t['branch_rates']}, scale-aware training "
        f"{'on' if t['scale_aware'] else 'off'}, test: {test}; per branch (rf px / ERF 2 sigma "
        "px / range px / gridding holes / HDC):"
    ]
    for b in info["branches"]:
        lo, hi = b["range"]
        g = b["gridding"]
        lines.append(
            f"  branch {b['branch']} x{b['multiplier']}: rates {b['rates'][t['stage']]}  "
            f"rf {b['rf']} / {b['erf_size']:.0f} / [{lo:g}, {'inf' if hi is None else f'{hi:g}'}]"
            f" / {g['holes']} of {g['receptive_field'] ** 2} ({g['rates']}) / "
            f"{'valid' if b['hdc']['valid'] else 'INVALID'}"
        )
    return lines


def format_info(info: dict) -> str:
    """A human-readable rendering of :func:`model_info`'s dict."""
    lines = [
        f"model: {info['variant']} ResNet-{info['depth']} ({info['norm']}), input {info['input_size']}",
        f"params: {info['params']:,} (backbone {info['params_backbone']:,}, "
        f"trainable {info['params_trainable']:,})",
        f"FLOPs (backbone): {info['flops'] / 1e9:.2f} G",
    ]
    if "flops_detector" in info:
        lines.append(f"FLOPs (detector, eval): {info['flops_detector'] / 1e9:.2f} G")
    lines.append(f"output stride: {info['output_stride']}")
    for name, shape in info["feature_size"].items():
        stride = info["feature_strides"][name]
        lines.append(f"feature {name}: {'x'.join(map(str, shape))} (stride {stride})")
    lines.append("receptive field per stage (rf px / jump px / 3x3 rates):")
    for stage, rf in info["receptive_field"].items():
        rates = info["dilations"].get(stage)
        extra = f"  rates {rates}" if rates else ""
        lines.append(f"  {stage:7s} {rf['rf']:5d} / {rf['jump']:3d}{extra}")
    hdc = info["hdc"]
    lines.append(
        f"HDC ({hdc['mode']}): {'valid' if hdc['valid'] else 'INVALID'} - {hdc['message']}"
    )
    if "branches" in info:
        lines += _format_branches(info)
    return "\n".join(lines)
