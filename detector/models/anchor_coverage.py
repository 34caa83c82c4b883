"""How well a config's anchors cover a dataset's boxes, per size bin, before any training.

The RPN calls an anchor positive at IoU >= ``model.rpn.fg_iou_thresh`` and, failing that, still
gives each box its best anchor (a "low-quality" match). At a coarse stride a small box is often
far from every anchor centre, so no anchor reaches the threshold and the box trains from one
weak match. This is the stride-versus-small-objects trade-off in numbers: it uses the model's
own :class:`~torchvision.models.detection.anchor_utils.AnchorGenerator` on the feature-map
sizes the model would produce for each image (padded to a multiple of 32, as the transform does).
"""

from __future__ import annotations

import math

import torch
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from detector.evaluation.bins import assign_bin, get_bins

from .backbone import OUTPUT_STRIDES
from .detector import build_anchor_generator

FPN_STRIDES = [4, 8, 16, 32, 64]  # P2-P5 and the max-pooled "pool" level
SIZE_DIVISIBLE = 32  # GeneralizedRCNNTransform pads each batch to this multiple


def feature_strides(variant: str) -> list[int]:
    """The strides of the maps that carry anchors: one for c5/dc5/dc4, five for fpn."""
    if variant == "fpn":
        return list(FPN_STRIDES)
    if variant not in OUTPUT_STRIDES:
        raise ValueError(f"unknown model.variant {variant!r}; valid: {', '.join(OUTPUT_STRIDES)}")
    return [OUTPUT_STRIDES[variant]]


def image_anchors(generator, variant: str, height: int, width: int) -> torch.Tensor:
    """All anchors (x1, y1, x2, y2) the model places on one ``height x width`` image."""
    ph = math.ceil(height / SIZE_DIVISIBLE) * SIZE_DIVISIBLE
    pw = math.ceil(width / SIZE_DIVISIBLE) * SIZE_DIVISIBLE
    images = ImageList(torch.empty(1, 3, ph, pw), [(height, width)])
    # the generator reads only the maps' shapes (and dtype/device)
    maps = [
        torch.empty(1, 1, math.ceil(ph / s), math.ceil(pw / s)) for s in feature_strides(variant)
    ]
    return generator(images, maps)[0]


def anchor_coverage(
    cfg, data: dict, *, bins="coco", scale: float = 1.0, short_side: int = 0, max_size: int = 0
) -> dict:
    """Best-anchor IoU statistics of every non-crowd box in the COCO dict ``data``, per size bin.

    ``scale`` resizes images and boxes first (e.g. 2.0 for a pipeline that upscales 2x);
    ``short_side`` instead resizes each image so its short side has that length (as
    ``data.transforms.train_scales`` does), its long side capped at ``max_size`` if set. The bins
    use the original areas so the rows match the evaluation's. Returns
    ``{"fg_iou_thresh", "strides", "anchors_per_location", "bins": {name: row}}`` where a row has
    ``count``, ``median_best_iou``, ``above_fg`` (share of boxes with an anchor at IoU >= the
    RPN threshold), ``above_05``, ``low_quality_only`` (share trained from the fallback match
    alone) and ``mean_positives`` (anchors at IoU >= the threshold per box).
    """
    mcfg = cfg["model"]
    variant = mcfg["variant"]
    fg = float(mcfg["rpn"]["fg_iou_thresh"])
    generator = build_anchor_generator(mcfg)
    size_bins = get_bins(bins)
    boxes_of: dict = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            boxes_of.setdefault(a["image_id"], []).append(a)
    best_all: list[float] = []
    positives_all: list[int] = []
    bin_of: list[str | None] = []
    for im in data["images"]:
        anns = boxes_of.get(im["id"])
        if not anns:
            continue
        f = scale
        if short_side:
            f = short_side / min(im["height"], im["width"])
            if max_size and max(im["height"], im["width"]) * f > max_size:
                f = max_size / max(im["height"], im["width"])
        h, w = round(im["height"] * f), round(im["width"] * f)
        anchors = image_anchors(generator, variant, h, w)
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64) * f
        gt = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        iou = box_iou(gt, anchors.double())
        best_all += iou.max(dim=1).values.tolist()
        positives_all += (iou >= fg).sum(dim=1).tolist()
        bin_of += [assign_bin(float(a["area"]), size_bins) for a in anns]
    rows = {}
    for b in size_bins:
        idx = [i for i, name in enumerate(bin_of) if b.name == "all" or name == b.name]
        if not idx:
            rows[b.name] = {"count": 0}
            continue
        best = torch.tensor([best_all[i] for i in idx])
        pos = torch.tensor([positives_all[i] for i in idx], dtype=torch.float64)
        rows[b.name] = {
            "count": len(idx),
            "median_best_iou": float(best.median()),
            "above_fg": float((best >= fg).double().mean()),
            "above_05": float((best >= 0.5).double().mean()),
            "low_quality_only": float((best < fg).double().mean()),
            "mean_positives": float(pos.mean()),
        }
    return {
        "variant": variant,
        "fg_iou_thresh": fg,
        "strides": feature_strides(variant),
        "anchor_sizes": list(mcfg["anchors"]["sizes"]),
        "aspect_ratios": list(mcfg["anchors"]["aspect_ratios"]),
        "scale": scale,
        "short_side": short_side,
        "bins": rows,
    }


def format_anchor_coverage(result: dict, title: str = "") -> str:
    """A plain-text table of :func:`anchor_coverage`'s rows."""
    fg = result["fg_iou_thresh"]
    head = (
        f"{result['variant']}: strides {result['strides']}, anchor sizes {result['anchor_sizes']}, "
        f"ratios {result['aspect_ratios']}, RPN positives at IoU >= {fg:g}"
        + (f", images x{result['scale']:g}" if result["scale"] != 1.0 else "")
        + (f", short side {result['short_side']} px" if result.get("short_side") else "")
    )
    lines = [title, head] if title else [head]
    lines.append(
        f"{'bin':<12}{'boxes':>7}{'median IoU':>12}{f'>= {fg:g}':>9}{'>= 0.5':>9}"
        f"{'fallback only':>15}{'positives/box':>15}"
    )
    for name, r in result["bins"].items():
        if not r["count"]:
            lines.append(f"{name:<12}{0:>7}")
            continue
        lines.append(
            f"{name:<12}{r['count']:>7}{r['median_best_iou']:>12.2f}{100 * r['above_fg']:>8.0f}%"
            f"{100 * r['above_05']:>8.0f}%{100 * r['low_quality_only']:>14.0f}%"
            f"{r['mean_positives']:>15.2f}"
        )
    return "\n".join(lines)
