"""How well a config's anchors cover a dataset's boxes, per size bin, before any training.

The IoU view: the RPN's IoU matcher calls an anchor positive at IoU >= ``model.rpn.fg_iou_thresh``
and, failing that, still gives each box its best anchor (a "low-quality" match). At a coarse
stride a small box is often far from every anchor centre, so no anchor reaches the threshold and
the box trains from one weak match. This is the stride-versus-small-objects trade-off in numbers.

The matcher view: the same boxes matched by the RPN the config trains (``model.rpn.matcher``:
iou, nwd or rfla), through :func:`~detector.models.matchers.match_anchors`, the code training
runs, so a user sees before training how many boxes get a positive and how many each gets.

Both use the model's own :class:`~torchvision.models.detection.anchor_utils.AnchorGenerator` on
the feature-map sizes the model would produce for each image (padded to a multiple of 32, as
the transform does), with the strides measured on the built backbone.
"""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Sequence

import torch
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from detector.utils.bins import assign_bin, get_bins

from .backbone import OUTPUT_STRIDES
from .detector import build_detector
from .matchers import describe_matcher, match_anchors
from .receptive_field import feature_receptive_fields

FPN_STRIDES = [4, 8, 16, 32, 64]  # P2-P5 and the max-pooled "pool" level
SIZE_DIVISIBLE = 32  # GeneralizedRCNNTransform pads each batch to this multiple


def feature_strides(variant: str) -> list[int]:
    """The strides of the maps that carry anchors: one for c5/dc5/dc4, five for fpn."""
    if variant == "fpn":
        return list(FPN_STRIDES)
    if variant not in OUTPUT_STRIDES:
        raise ValueError(f"unknown model.variant {variant!r}; valid: {', '.join(OUTPUT_STRIDES)}")
    return [OUTPUT_STRIDES[variant]]


def padded_size(height: int, width: int) -> tuple[int, int]:
    """The batch size the model's transform pads a ``height x width`` image to."""
    return (
        math.ceil(height / SIZE_DIVISIBLE) * SIZE_DIVISIBLE,
        math.ceil(width / SIZE_DIVISIBLE) * SIZE_DIVISIBLE,
    )


def feature_grid(strides: Sequence[int], height: int, width: int) -> list[tuple[int, int]]:
    """The (height, width) of each feature map for a ``height x width`` image, padded to a
    multiple of 32 first like the model's transform."""
    ph, pw = padded_size(height, width)
    return [(math.ceil(ph / s), math.ceil(pw / s)) for s in strides]


def image_anchors(generator, variant: str | Sequence[int], height: int, width: int) -> torch.Tensor:
    """All anchors (x1, y1, x2, y2) the model places on one ``height x width`` image;
    ``variant`` is a variant name or the maps' strides."""
    strides = feature_strides(variant) if isinstance(variant, str) else list(variant)
    images = ImageList(torch.empty(1, 3, *padded_size(height, width)), [(height, width)])
    # the generator reads only the maps' shapes (and dtype/device)
    maps = [torch.empty(1, 1, h, w) for h, w in feature_grid(strides, height, width)]
    return generator(images, maps)[0]


def matching_model(cfg):
    """The detector ``cfg`` trains, built for its anchors and RPN matcher only (no weights
    loaded, one class, HDC warnings silenced: none of that changes the matching)."""
    mcfg = copy.deepcopy(dict(cfg["model"]))
    mcfg["backbone"] = {**mcfg["backbone"], "weights": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_detector(mcfg, num_classes=1)


def anchor_coverage(
    cfg, data: dict, *, bins="coco", scale: float = 1.0, short_side: int = 0, max_size: int = 0
) -> dict:
    """Best-anchor IoU statistics and the RPN matcher's positives of every non-crowd box in the
    COCO dict ``data``, per size bin.

    ``scale`` resizes images and boxes first (e.g. 2.0 for a pipeline that upscales 2x);
    ``short_side`` instead resizes each image so its short side has that length (as
    ``data.transforms.train_scales`` does), its long side capped at ``max_size`` if set. The bins
    use the original areas so the rows match the evaluation's. Returns ``{"fg_iou_thresh",
    "strides", "matcher", "matcher_rule", "bins": {name: row}, ...}`` where a row has ``count``;
    the IoU view ``median_best_iou``, ``above_fg`` (share of boxes with an anchor at IoU >= the
    RPN threshold), ``above_05``, ``low_quality_only`` (share trained from the fallback match
    alone), ``mean_positives`` (anchors at IoU >= the threshold per box); and the matcher view
    (what ``model.rpn.matcher`` assigns in training) ``matched`` (share of boxes with at least
    one positive anchor), ``matched_positives`` (positive anchors per box), ``positive_iou``
    (median over boxes of the mean IoU of their positive anchors) and ``positive_levels``
    (share of the positives on each feature map).
    """
    mcfg = cfg["model"]
    variant = mcfg["variant"]
    fg = float(mcfg["rpn"]["fg_iou_thresh"])
    model = matching_model(cfg)
    rpn = model.rpn
    generator = rpn.anchor_generator
    maps = feature_receptive_fields(model.backbone)
    names, strides = list(maps), [m["stride"] for m in maps.values()]
    per_point = generator.num_anchors_per_location()
    size_bins = get_bins(bins)
    boxes_of: dict = {}
    for a in data["annotations"]:
        if not a.get("iscrowd", 0):
            boxes_of.setdefault(a["image_id"], []).append(a)
    best_all: list[float] = []
    positives_all: list[int] = []
    matched_all: list[int] = []
    pos_iou_all: list[float] = []
    pos_level_all: list[list[int]] = []
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
        anchors = image_anchors(generator, strides, h, w)
        grid = feature_grid(strides, h, w)
        levels = [(n, gh, gw) for n, (gh, gw) in zip(names, grid)]
        level_of = torch.repeat_interleave(
            torch.arange(len(names)),
            torch.tensor([gh * gw * a for (gh, gw), a in zip(grid, per_point)]),
        )
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float64) * f
        gt = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        iou = box_iou(gt, anchors.double())
        best_all += iou.max(dim=1).values.tolist()
        positives_all += (iou >= fg).sum(dim=1).tolist()
        # the training matcher, in the training dtype, on the boxes training keeps (w, h > 0)
        keep = torch.nonzero((xywh[:, 2:] > 0).all(dim=1)).flatten()
        with torch.no_grad():
            matched = match_anchors(rpn, anchors, gt[keep].to(anchors.dtype), levels)
        pos = torch.nonzero(matched >= 0).flatten()
        owner = keep[matched[pos]]
        matched_all += torch.bincount(owner, minlength=len(anns)).tolist()
        pos_iou = iou[owner, pos]
        for j in range(len(anns)):
            mine = owner == j
            pos_iou_all.append(float(pos_iou[mine].mean()) if mine.any() else math.nan)
            pos_level_all.append(torch.bincount(level_of[pos[mine]], minlength=len(names)).tolist())
        bin_of += [assign_bin(float(a["area"]), size_bins) for a in anns]
    rows = {}
    for b in size_bins:
        idx = [i for i, name in enumerate(bin_of) if b.name == "all" or name == b.name]
        if not idx:
            rows[b.name] = {"count": 0}
            continue
        best = torch.tensor([best_all[i] for i in idx])
        pos = torch.tensor([positives_all[i] for i in idx], dtype=torch.float64)
        npos = torch.tensor([matched_all[i] for i in idx], dtype=torch.float64)
        piou = torch.tensor([pos_iou_all[i] for i in idx if not math.isnan(pos_iou_all[i])])
        per_level = torch.tensor([pos_level_all[i] for i in idx], dtype=torch.float64).sum(0)
        total = float(per_level.sum())
        rows[b.name] = {
            "count": len(idx),
            "median_best_iou": float(best.median()),
            "above_fg": float((best >= fg).double().mean()),
            "above_05": float((best >= 0.5).double().mean()),
            "low_quality_only": float((best < fg).double().mean()),
            "mean_positives": float(pos.mean()),
            "matched": float((npos > 0).double().mean()),
            "matched_positives": float(npos.mean()),
            "positive_iou": float(piou.median()) if len(piou) else math.nan,
            "positive_levels": {
                n: (float(c) / total if total else 0.0) for n, c in zip(names, per_level)
            },
        }
    return {
        "variant": variant,
        "fg_iou_thresh": fg,
        "strides": strides,
        "maps": names,
        "anchor_sizes": list(mcfg["anchors"]["sizes"]),
        "aspect_ratios": list(mcfg["anchors"]["aspect_ratios"]),
        "scale": scale,
        "short_side": short_side,
        "matcher": mcfg["rpn"].get("matcher", "iou"),
        "matcher_rule": describe_matcher(rpn),
        "bins": rows,
    }


def format_anchor_coverage(result: dict, title: str = "") -> str:
    """A plain-text table of :func:`anchor_coverage`'s rows: the IoU view, then (after ``|``)
    what the configured RPN matcher assigns."""
    fg = result["fg_iou_thresh"]
    head = (
        f"{result['variant']}: strides {result['strides']}, anchor sizes {result['anchor_sizes']}, "
        f"ratios {result['aspect_ratios']}, RPN positives at IoU >= {fg:g}"
        + (f", images x{result['scale']:g}" if result["scale"] != 1.0 else "")
        + (f", short side {result['short_side']} px" if result.get("short_side") else "")
    )
    lines = [title, head] if title else [head]
    if "matcher_rule" in result:
        lines.append(f"training matcher | {result['matcher_rule']}")
    multi = len(result.get("maps", [])) > 1
    lines.append(
        f"{'bin':<12}{'boxes':>7}{'median IoU':>12}{f'>= {fg:g}':>9}{'>= 0.5':>9}"
        f"{'fallback only':>15}{'positives/box':>15} |{'has pos':>8}{'pos/box':>9}{'pos IoU':>9}"
        + ("  positives per map" if multi else "")
    )
    for name, r in result["bins"].items():
        if not r["count"]:
            lines.append(f"{name:<12}{0:>7}")
            continue
        line = (
            f"{name:<12}{r['count']:>7}{r['median_best_iou']:>12.2f}{100 * r['above_fg']:>8.0f}%"
            f"{100 * r['above_05']:>8.0f}%{100 * r['low_quality_only']:>14.0f}%"
            f"{r['mean_positives']:>15.2f}"
        )
        if "matched" in r:
            line += (
                f" |{100 * r['matched']:>7.0f}%{r['matched_positives']:>9.2f}"
                f"{r['positive_iou']:>9.2f}"
            )
            if multi:
                line += "  " + " ".join(
                    f"{n}:{100 * v:.0f}%" for n, v in r["positive_levels"].items() if v >= 0.005
                )
        lines.append(line)
    return "\n".join(lines)
