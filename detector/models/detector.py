"""``build_detector(cfg)``: a torchvision ``FasterRCNN`` for the c5 / dc5 / dc4 / fpn variants.

Single-map variants (c5, dc5, dc4, with or without HDC rates) put every anchor size on the one
feature map ``"0"``; ``fpn`` puts one size per level (5 levels: ``"0"``-``"3"`` and ``"pool"``).
The RPN/RoI parameters come from ``model.rpn`` and ``model.roi``; their ``matcher`` keys (iou,
nwd, rfla) are wired by :func:`~detector.models.matchers.configure_matchers` (iou leaves
torchvision's modules as built). ``model.transform.min_size`` 0 keeps images at the size the
data pipeline produced (:class:`NativeSizeTransform`). ``model.trident.enabled`` makes it a
:class:`~detector.models.trident.TridentFasterRCNN` (same modules, the backbone's stage run as
weight-sharing branches; :func:`~detector.models.trident.configure_trident`).
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.rpn import RPNHead
from torchvision.models.detection.transform import GeneralizedRCNNTransform
from torchvision.ops import MultiScaleRoIAlign

from detector.config.loader import ConfigError

from .backbone import OUTPUT_STRIDES, VARIANTS, build_backbone
from .matchers import configure_matchers
from .trident import TridentFasterRCNN, configure_trident

FPN_LEVELS = ["0", "1", "2", "3", "pool"]


class NativeSizeTransform(GeneralizedRCNNTransform):
    """Normalises and batches (padding to ``size_divisible``) but never resizes, so boxes come
    back in the input's own pixel coordinates."""

    def resize(self, image: torch.Tensor, target=None):
        return image, target


def _positive_sizes(sizes) -> list[int]:
    if not isinstance(sizes, (list, tuple)) or not sizes:
        raise ConfigError(f"model.anchors.sizes must be a non-empty list, got {sizes!r}")
    for s in sizes:
        if isinstance(s, bool) or not isinstance(s, (int, float)) or s <= 0:
            raise ConfigError(f"model.anchors.sizes must be positive numbers, got {sizes!r}")
    return list(sizes)


def build_anchor_generator(mcfg) -> AnchorGenerator:
    sizes = _positive_sizes(mcfg["anchors"]["sizes"])
    ratios = tuple(float(r) for r in mcfg["anchors"]["aspect_ratios"])
    if not ratios or any(r <= 0 for r in ratios):
        raise ConfigError(f"model.anchors.aspect_ratios must be positive, got {list(ratios)}")
    if mcfg["variant"] == "fpn":
        if len(sizes) != len(FPN_LEVELS):
            raise ConfigError(
                f"model.anchors.sizes: the fpn variant takes one size per level "
                f"({len(FPN_LEVELS)} levels), got {len(sizes)}: {sizes}"
            )
        return AnchorGenerator(tuple((s,) for s in sizes), (ratios,) * len(FPN_LEVELS))
    return AnchorGenerator((tuple(sizes),), (ratios,))


def build_transform(tcfg) -> GeneralizedRCNNTransform:
    mean, std = list(tcfg["image_mean"]), list(tcfg["image_std"])
    min_size, max_size = tcfg["min_size"], tcfg["max_size"]
    if min_size < 0 or max_size < 0:
        raise ConfigError("model.transform.min_size/max_size must be >= 0 (0 = no resizing)")
    if min_size == 0:
        return NativeSizeTransform(1, 1, mean, std)
    # max_size 0 = no cap on the long side
    return GeneralizedRCNNTransform(min_size, max_size or 10**6, mean, std)


def build_detector(cfg, num_classes: int | None = None) -> FasterRCNN:
    """A ``FasterRCNN`` for ``cfg`` with ``num_classes`` foreground classes (default
    ``cfg.model.num_classes``); the predictor gets one more for the background."""
    mcfg = cfg.get("model", cfg)
    variant = mcfg["variant"]
    if variant not in VARIANTS:
        raise ConfigError(f"unknown model.variant {variant!r}; valid: {', '.join(VARIANTS)}")
    n = mcfg["num_classes"] if num_classes is None else num_classes
    if isinstance(n, bool) or not isinstance(n, int) or n <= 0:
        raise ConfigError(
            f"the detector needs a positive number of foreground classes, got {n!r} "
            "(set model.num_classes or pass num_classes=, e.g. from the dataset)"
        )
    anchors = build_anchor_generator(mcfg)
    backbone = build_backbone(mcfg)
    rpn, roi = mcfg["rpn"], mcfg["roi"]
    names = FPN_LEVELS[:4] if variant == "fpn" else ["0"]
    out = roi["output_size"]
    roi_pool = MultiScaleRoIAlign(names, out, roi["sampling_ratio"])
    box_head = TwoMLPHead(backbone.out_channels * out * out, roi["representation_size"])
    trident = bool((mcfg.get("trident") or {}).get("enabled"))
    model = (TridentFasterRCNN if trident else FasterRCNN)(
        backbone,
        num_classes=None,
        rpn_anchor_generator=anchors,
        rpn_head=RPNHead(backbone.out_channels, anchors.num_anchors_per_location()[0]),
        rpn_pre_nms_top_n_train=rpn["pre_nms_top_n_train"],
        rpn_pre_nms_top_n_test=rpn["pre_nms_top_n_test"],
        rpn_post_nms_top_n_train=rpn["post_nms_top_n_train"],
        rpn_post_nms_top_n_test=rpn["post_nms_top_n_test"],
        rpn_nms_thresh=rpn["nms_thresh"],
        rpn_fg_iou_thresh=rpn["fg_iou_thresh"],
        rpn_bg_iou_thresh=rpn["bg_iou_thresh"],
        rpn_batch_size_per_image=rpn["batch_size_per_image"],
        rpn_positive_fraction=rpn["positive_fraction"],
        rpn_score_thresh=rpn["score_thresh"],
        box_roi_pool=roi_pool,
        box_head=box_head,
        box_predictor=FastRCNNPredictor(roi["representation_size"], n + 1),
        box_score_thresh=roi["score_thresh"],
        box_nms_thresh=roi["nms_thresh"],
        box_detections_per_img=roi["detections_per_img"],
        box_fg_iou_thresh=roi["fg_iou_thresh"],
        box_bg_iou_thresh=roi["bg_iou_thresh"],
        box_batch_size_per_image=roi["batch_size_per_image"],
        box_positive_fraction=roi["positive_fraction"],
    )
    model.transform = build_transform(mcfg["transform"])
    model.output_stride = OUTPUT_STRIDES[variant]
    configure_matchers(model, mcfg)
    if trident:
        configure_trident(model, mcfg)
    return model


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
