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
