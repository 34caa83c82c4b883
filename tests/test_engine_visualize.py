"""Drawing GT and predictions: a uint8 CHW image, upscaled for tiny inputs, colours by bin."""

from __future__ import annotations

import torch

from detector.engine.visualize import GT_PALETTE, PRED_PALETTE, draw_gt_and_predictions


def _rgb(hex_colour: str) -> torch.Tensor:
    return torch.tensor([int(hex_colour[i : i + 2], 16) for i in (1, 3, 5)], dtype=torch.uint8)


def test_draws_gt_and_predictions_in_bin_colours():
    image = torch.zeros(3, 64, 64)
    gt = torch.tensor([[4.0, 4.0, 14.0, 14.0], [20.0, 20.0, 60.0, 60.0]])  # small, medium
    pred = torch.tensor([[30.0, 2.0, 40.0, 12.0], [0.0, 40.0, 5.0, 45.0]])
    out = draw_gt_and_predictions(image, gt, pred, torch.tensor([0.9, 0.1]), bins="coco")
    assert out.dtype == torch.uint8 and out.shape == (3, 512, 512)  # upscaled 8x
    colours = {tuple(c.tolist()) for c in out.reshape(3, -1).T.unique(dim=0)}
    assert tuple(_rgb(GT_PALETTE[0]).tolist()) in colours  # GT small
    assert tuple(_rgb(GT_PALETTE[1]).tolist()) in colours  # GT medium
    assert tuple(_rgb(PRED_PALETTE[0]).tolist()) in colours  # prediction, small
    # the low-score prediction is not drawn: nothing left at its corner
    assert out[:, 44 * 8, 1].sum() == 0


def test_area_scale_moves_boxes_between_bins():
    image = torch.zeros(3, 128, 128)
    gt = torch.tensor([[0.0, 0.0, 40.0, 40.0]])  # 40 px in the drawn frame, 20 px originally
    medium = draw_gt_and_predictions(image, gt, torch.zeros(0, 4), bins="coco", min_side=0)
    small = draw_gt_and_predictions(
        image, gt, torch.zeros(0, 4), bins="coco", min_side=0, area_scale=0.25
    )
    assert torch.equal(medium[:, 0, 0], _rgb(GT_PALETTE[1]))
    assert torch.equal(small[:, 0, 0], _rgb(GT_PALETTE[0]))


def test_labels_name_the_class_the_bin_and_the_score(monkeypatch):
    from PIL import ImageDraw

    texts = []
    real = ImageDraw.ImageDraw.text

    def spy(self, xy, text, *args, **kwargs):
        texts.append(text)
        return real(self, xy, text, *args, **kwargs)

    monkeypatch.setattr(ImageDraw.ImageDraw, "text", spy)
    image = torch.zeros(3, 256, 256)
    gt = torch.tensor([[100.0, 100.0, 110.0, 110.0]])  # 10 px: small
    pred = torch.tensor([[101.0, 100.0, 111.0, 110.0], [10.0, 10.0, 60.0, 60.0]])
    draw_gt_and_predictions(
        image,
        gt,
        pred,
        torch.tensor([0.5, 0.834]),
        bins="coco",
        min_side=0,
        gt_labels=torch.tensor([2]),
        pred_labels=torch.tensor([5, 1]),
        class_names=["circle", "square", "triangle", "cross", "ring"],
    )
    # a square taken for a ring is readable from the labels; GT first, then by score
    assert texts == ["gt:square small", "circle medium 0.83", "ring small 0.50"]


def test_labels_never_overlap_and_skip_what_finds_no_room():
    from detector.engine.visualize import place_labels

    # two touching 8 px boxes, labels 30x10: the first goes above its box; the second finds
    # the space above its own box taken and goes below it
    boxes = [(20.0, 20.0, 28.0, 28.0), (28.0, 20.0, 36.0, 28.0)]
    spots = place_labels(boxes, [(30, 10)] * 2, 100, 100)
    assert spots[0] == (20.0, 9.0, 50.0, 19.0)
    assert spots[1] == (28.0, 29.0, 58.0, 39.0)
    # an image too small for any candidate: no label rather than one cut off or on top
    assert place_labels([(0.0, 0.0, 8.0, 8.0)], [(30, 10)], 20, 20) == [None]
    # a dense row of boxes: some labels are left out, and those placed are clear of each other
    row = [(float(x), 40.0, x + 6.0, 46.0) for x in range(0, 96, 6)]
    placed = [s for s in place_labels(row, [(24, 10)] * len(row), 100, 100) if s]
    assert 2 <= len(placed) < len(row)
    for i, a in enumerate(placed):
        for b in placed[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
