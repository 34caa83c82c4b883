"""Draw ground truth and predictions on an image, each box coloured by its size bin.

Ground truth uses a cool palette (greens/blues, thick lines, labelled ``gt:<bin>``) and
predictions a warm one (reds/oranges, thin lines, labelled ``<bin> <score>``), so the two are
told apart at a glance and the size bin is readable from both colour and label.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.utils import draw_bounding_boxes

from detector.utils.bins import assign_bin, get_bins

GT_PALETTE = ["#00ff66", "#00ccff", "#3366ff", "#aa66ff", "#00ffcc", "#99ff33"]
PRED_PALETTE = ["#ff3333", "#ff9900", "#ffee00", "#ff33cc", "#ff6666", "#cc6600"]


def _colour_map(bins) -> tuple[dict, dict]:
    names = [b.name for b in bins if b.name != "all"]
    gt = {n: GT_PALETTE[i % len(GT_PALETTE)] for i, n in enumerate(names)}
    pred = {n: PRED_PALETTE[i % len(PRED_PALETTE)] for i, n in enumerate(names)}
    gt[None] = "#ffffff"
    pred[None] = "#888888"
    return gt, pred


def draw_gt_and_predictions(
    image: torch.Tensor,
    gt_boxes: torch.Tensor,
    pred_boxes: torch.Tensor,
    pred_scores: torch.Tensor | None = None,
    bins="coco",
    score_thresh: float = 0.3,
    min_side: int = 512,
    area_scale: float = 1.0,
) -> torch.Tensor:
    """A ``3xHxW`` uint8 image; boxes are xyxy in the pixel frame of ``image``.

    Small images are upscaled (nearest) so that their short side is at least ``min_side`` and
    the boxes of tiny objects stay visible. ``area_scale`` converts a box area in ``image``
    pixels to the original image's pixels (the frame the size bins refer to), for an image the
    data pipeline resized.
    """
    if isinstance(bins, str | list) or bins is None:
        bins = get_bins(bins)
    img = image.detach().float().cpu()
    if img.max() <= 1.0 + 1e-6:
        img = img * 255
    img = img.clamp(0, 255)
    if img.shape[0] == 1:
        img = img.expand(3, -1, -1)
    h, w = img.shape[-2:]
    scale = max(1, int(min_side // max(1, min(h, w))))
    if scale > 1:
        img = F.interpolate(img[None], scale_factor=scale, mode="nearest")[0]
    img = img.to(torch.uint8)
    gt_col, pred_col = _colour_map(bins)

    def bin_of(b: torch.Tensor) -> str | None:
        area = float((b[2] - b[0]).clamp(min=0) * (b[3] - b[1]).clamp(min=0))
        return assign_bin(area * area_scale, bins)

    gt_boxes = gt_boxes.detach().float().cpu().reshape(-1, 4)
    if len(gt_boxes):
        names = [bin_of(b) for b in gt_boxes]
        img = draw_bounding_boxes(
            img,
            gt_boxes * scale,
            labels=[f"gt:{n}" for n in names],
            colors=[gt_col[n] for n in names],
            width=2,
        )
    pred_boxes = pred_boxes.detach().float().cpu().reshape(-1, 4)
    if pred_scores is not None:
        pred_scores = pred_scores.detach().float().cpu().reshape(-1)
        keep = pred_scores >= score_thresh
        pred_boxes, pred_scores = pred_boxes[keep], pred_scores[keep]
    if len(pred_boxes):
        names = [bin_of(b) for b in pred_boxes]
        labels = [
            f"{n} {s:.2f}" if pred_scores is not None else str(n)
            for n, s in zip(names, pred_scores if pred_scores is not None else names)
        ]
        img = draw_bounding_boxes(
            img, pred_boxes * scale, labels=labels, colors=[pred_col[n] for n in names], width=1
        )
    return img
