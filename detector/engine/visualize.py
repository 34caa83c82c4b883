"""Draw ground truth and predictions on an image, each box coloured by its size bin.

Ground truth uses a cool palette (greens/blues, thick lines) and predictions a warm one
(reds/oranges, thin lines), so the two are told apart at a glance. Every box is labelled with
what a reader needs to see a class confusion: ``gt:<class> <bin>`` and ``<class> <bin> <score>``
(the class is left out when no labels are given).

Labels of small boxes in dense clusters would pile up on top of each other and of the objects,
so they are placed, not just drawn: each label goes above, below or beside its box, on a dark
backing, at the first place that overlaps no label already placed (and, if possible, no box);
ground truth first, then predictions by descending score. A label that finds no free place is
left out rather than drawn over another one, so every label shown can be read.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont

from detector.utils.bins import assign_bin, get_bins

GT_PALETTE = ["#00ff66", "#00ccff", "#6699ff", "#bb88ff", "#00ffcc", "#99ff33"]
PRED_PALETTE = ["#ff3333", "#ff9900", "#ffee00", "#ff33cc", "#ff6666", "#cc6600"]
LABEL_BACKING = (0, 0, 0)
FONT_SIZE = 11  # px in the drawn image, whatever its scale

Rect = tuple[float, float, float, float]


def bin_colours(bins) -> tuple[dict, dict]:
    """(ground truth, prediction) colour per size-bin name (and ``None`` for out of every bin),
    so that a box's colour says its size in every drawing."""
    names = [b.name for b in bins if b.name != "all"]
    gt = {n: GT_PALETTE[i % len(GT_PALETTE)] for i, n in enumerate(names)}
    pred = {n: PRED_PALETTE[i % len(PRED_PALETTE)] for i, n in enumerate(names)}
    gt[None] = "#ffffff"
    pred[None] = "#888888"
    return gt, pred


def _font() -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=FONT_SIZE)  # FreeType build of Pillow >= 10.1
    except (TypeError, OSError, ValueError):
        return ImageFont.load_default()


def _overlaps(a: Rect, b: Rect, margin: float = 1.0) -> bool:
    return not (
        a[2] + margin <= b[0]
        or b[2] + margin <= a[0]
        or a[3] + margin <= b[1]
        or b[3] + margin <= a[1]
    )


def place_labels(
    boxes: Sequence[Rect], sizes: Sequence[tuple[float, float]], width: int, height: int
) -> list[Rect | None]:
    """Greedy label placement, in the given order: a rectangle per box, or None (no room).

    Candidates: above the box (left- then right-aligned), below it, right and left of it, and
    inside its top-left corner when the box is larger than the label. A candidate must lie in
    the image and overlap no placed label; one that also overlaps no other box is preferred.
    """
    placed: list[Rect] = []
    out: list[Rect | None] = []
    for i, ((x0, y0, x1, y1), (w, h)) in enumerate(zip(boxes, sizes)):
        cands = [
            (x0, y0 - h - 1),
            (x1 - w, y0 - h - 1),
            (x0, y1 + 1),
            (x1 - w, y1 + 1),
            (x1 + 1, y0),
            (x0 - w - 1, y0),
        ]
        if w <= x1 - x0 - 2 and h <= y1 - y0 - 2:
            cands.append((x0 + 1, y0 + 1))
        rects = [(x, y, x + w, y + h) for x, y in cands]
        rects = [r for r in rects if r[0] >= 0 and r[1] >= 0 and r[2] <= width and r[3] <= height]
        free = [r for r in rects if not any(_overlaps(r, p) for p in placed)]
        others = [b for j, b in enumerate(boxes) if j != i]
        clear = [r for r in free if not any(_overlaps(r, b, 0.0) for b in others)]
        choice = (clear or free or [None])[0]
        if choice is not None:
            placed.append(choice)
        out.append(choice)
    return out


def _label_text(kind: str, cls: str | None, bin_name: str | None, score: float | None) -> str:
    parts = [p for p in (cls, bin_name) if p]
    if kind == "gt":
        parts = [f"gt:{parts[0]}", *parts[1:]] if parts else ["gt"]
    if score is not None:
        parts.append(f"{score:.2f}")
    return " ".join(parts)


def draw_gt_and_predictions(
    image: torch.Tensor,
    gt_boxes: torch.Tensor,
    pred_boxes: torch.Tensor,
    pred_scores: torch.Tensor | None = None,
    bins="coco",
    score_thresh: float = 0.3,
    min_side: int = 512,
    area_scale: float = 1.0,
    gt_labels: torch.Tensor | None = None,
    pred_labels: torch.Tensor | None = None,
    class_names: Sequence[str] | None = None,
) -> torch.Tensor:
    """A ``3xHxW`` uint8 image; boxes are xyxy in the pixel frame of ``image``.

    Small images are upscaled (nearest) so that their short side is at least ``min_side`` and
    the boxes of tiny objects stay visible. ``area_scale`` converts a box area in ``image``
    pixels to the original image's pixels (the frame the size bins refer to), for an image the
    data pipeline resized. ``gt_labels``/``pred_labels`` are the model's labels ``1..K``,
    named by ``class_names[label - 1]``.
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
    gt_col, pred_col = bin_colours(bins)

    def bin_of(b: torch.Tensor) -> str | None:
        area = float((b[2] - b[0]).clamp(min=0) * (b[3] - b[1]).clamp(min=0))
        return assign_bin(area * area_scale, bins)

    def name_of(labels: torch.Tensor | None, k: int) -> str | None:
        if labels is None:
            return None
        lab = int(labels[k])
        if class_names and 1 <= lab <= len(class_names):
            return str(class_names[lab - 1])
        return str(lab)

    gt_boxes = gt_boxes.detach().float().cpu().reshape(-1, 4)
    gt_labels = None if gt_labels is None else gt_labels.detach().cpu().reshape(-1)
    pred_boxes = pred_boxes.detach().float().cpu().reshape(-1, 4)
    pred_labels = None if pred_labels is None else pred_labels.detach().cpu().reshape(-1)
    order = list(range(len(pred_boxes)))
    if pred_scores is not None:
        pred_scores = pred_scores.detach().float().cpu().reshape(-1)
        order = [k for k in order if float(pred_scores[k]) >= score_thresh]
        order.sort(key=lambda k: -float(pred_scores[k]))

    # (rect in the drawn frame, colour, line width, label text), GT first
    items: list[tuple[Rect, str, int, str]] = []
    for k, b in enumerate(gt_boxes):
        n = bin_of(b)
        rect = tuple(float(v) * scale for v in b.tolist())
        items.append((rect, gt_col[n], 2, _label_text("gt", name_of(gt_labels, k), n, None)))
    for k in order:
        b = pred_boxes[k]
        n = bin_of(b)
        rect = tuple(float(v) * scale for v in b.tolist())
        score = float(pred_scores[k]) if pred_scores is not None else None
        items.append((rect, pred_col[n], 1, _label_text("pred", name_of(pred_labels, k), n, score)))

    canvas = Image.fromarray(img.round().to(torch.uint8).permute(1, 2, 0).numpy())
    draw = ImageDraw.Draw(canvas)
    font = _font()
    for rect, colour, width, _ in items:
        x0, y0, x1, y1 = rect
        draw.rectangle([x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)], outline=colour, width=width)
    sizes = []
    for *_, text in items:
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        sizes.append((right - left + 2, bottom - top + 2))
    spots = place_labels([it[0] for it in items], sizes, canvas.width, canvas.height)
    for (_, colour, _, text), spot in zip(items, spots):
        if spot is None:
            continue
        x0, y0, x1, y1 = spot
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=LABEL_BACKING)
        left, top, _, _ = draw.textbbox((0, 0), text, font=font)
        draw.text((x0 + 1 - left, y0 + 1 - top), text, fill=colour, font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()
