"""RPN / RoI matchers: NWD and RFLA worked out by hand, the RF priors from the model's own walk,
a training forward for every variant, and ``iou`` bit-identical to torchvision's own path."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import pytest
import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import box_iou

import detector.models.detector as detector_module
from detector.config import ConfigError, load_config
from detector.models import anchor_coverage, build_detector, model_info
from detector.models.anchor_coverage import image_anchors
from detector.models.matchers import (
    IGNORE,
    NEGATIVE,
    NWDSimilarity,
    RFLARegionProposalNetwork,
    SimilarityRoIHeads,
    box_nwd,
    match_anchors,
    rfd_score,
    rfla_assign,
)

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ["c5", "dc5", "dc4", "fpn"]


def _cfg(*overrides: str, config: str | None = None):
    return load_config(config and ROOT / "configs" / config, ["model.backbone.norm=gn", *overrides])


def _build(cfg, n: int = 2):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # dc5's uniform rate fails HDC rule 1
        return build_detector(cfg, num_classes=n)


def _batch():
    g = torch.Generator().manual_seed(1)
    images = [torch.rand(3, 64, 96, generator=g), torch.rand(3, 64, 64, generator=g)]
    targets = [
        {"boxes": torch.tensor([[10.0, 12.0, 26.0, 28.0], [40.0, 30.0, 60.0, 50.0]]),
         "labels": torch.tensor([1, 2])},
        {"boxes": torch.tensor([[5.0, 5.0, 20.0, 21.0]]), "labels": torch.tensor([1])},
    ]  # fmt: skip
    return images, targets


def _losses(model) -> dict[str, torch.Tensor]:
    model.train()
    images, targets = _batch()
    torch.manual_seed(2)  # the samplers draw from the global generator
    return {k: v.detach() for k, v in model(images, targets).items()}


def _seeded(cfg, seed: int = 0):
    torch.manual_seed(seed)
    return _build(cfg)


# ----------------------------------------------------------------------------------------- NWD
def test_nwd_of_identical_boxes_is_one():
    boxes = torch.tensor([[0.0, 0.0, 16.0, 16.0], [3.0, 5.0, 9.0, 30.0], [10.0, 10.0, 11.0, 12.0]])
    assert torch.equal(box_nwd(boxes, boxes).diagonal(), torch.ones(3))
    assert box_nwd(boxes, boxes[:2]).shape == (3, 2)


def test_nwd_worked_examples():
    # a = [0, 0, 16, 16] -> (cx, cy, w/2, h/2) = (8, 8, 8, 8); b = [0, 0, 24, 24] -> (12, 12, 12, 12)
    # W2^2 = 4^2 + 4^2 + 4^2 + 4^2 = 64, W2 = 8, NWD = exp(-8 / 12.8) = exp(-0.625) = 0.5353
    # (IoU 256 / 576 = 0.44)
    a, b = torch.tensor([[0.0, 0.0, 16.0, 16.0]]), torch.tensor([[0.0, 0.0, 24.0, 24.0]])
    assert box_nwd(a, b).item() == pytest.approx(math.exp(-0.625))
    assert box_nwd(a, b).item() == pytest.approx(0.535261, abs=1e-6)
    assert box_nwd(b, a).item() == pytest.approx(box_nwd(a, b).item())  # symmetric
    # two 8 px boxes 4 px apart: W2 = 4, NWD = exp(-4 / 12.8) = 0.7316, where IoU is 32 / 96 = 1/3
    c, d = torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([[4.0, 0.0, 12.0, 8.0]])
    assert box_nwd(c, d).item() == pytest.approx(math.exp(-4 / 12.8))
    assert box_iou(c, d).item() == pytest.approx(1 / 3)
    # the constant: C = 4 gives exp(-1)
    assert box_nwd(c, d, constant=4.0).item() == pytest.approx(math.exp(-1))


def test_rpn_nwd_uses_torchvisions_matcher_with_low_quality_matches():
    grid = ["model.variant=dc5", "model.anchors.sizes=[16]", "model.anchors.aspect_ratios=[1.0]"]
    m = _build(_cfg(*grid, "model.rpn.matcher=nwd", "model.rpn.nwd.fg_thresh=0.6"))
    assert type(m.rpn) is RegionProposalNetwork  # attributes swapped, the class is torchvision's
    assert isinstance(m.rpn.box_similarity, NWDSimilarity) and m.rpn.box_similarity.constant == 12.8
    matcher = m.rpn.proposal_matcher
    assert (matcher.high_threshold, matcher.low_threshold) == (0.6, 0.3)
    assert matcher.allow_low_quality_matches
    # a 16 px box at (2, 2): the nearest anchor (16 px at (16, 16)) has NWD
    # exp(-sqrt(6^2 + 6^2) / 12.8) = 0.515 < 0.6, so the box gets it as its fallback match
    anchors = image_anchors(m.rpn.anchor_generator, [16], 64, 64)
    gt = torch.tensor([[2.0, 2.0, 18.0, 18.0]])
    matched = match_anchors(m.rpn, anchors, gt, [("0", 4, 4)])
    assert torch.nonzero(matched >= 0).flatten().tolist() == [5]  # point (16, 16): row 1, col 1
    assert box_nwd(gt, anchors[5:6]).item() == pytest.approx(math.exp(-math.sqrt(72) / 12.8))


def test_roi_nwd_head_matches_by_nwd():
    m = _build(_cfg("model.variant=c5", "model.roi.matcher=nwd"))
    assert type(m.roi_heads) is SimilarityRoIHeads and isinstance(m.roi_heads, RoIHeads)
    assert not m.roi_heads.proposal_matcher.allow_low_quality_matches
    assert m.roi_heads.proposal_matcher.high_threshold == 0.5
    # the 8 px proposal 4 px off: IoU 1/3 (background for IoU 0.5), NWD 0.73 (foreground)
    gt, props = torch.tensor([[0.0, 0.0, 8.0, 8.0]]), torch.tensor([[4.0, 0.0, 12.0, 8.0]])
    idx, labels = m.roi_heads.assign_targets_to_proposals([props], [gt], [torch.tensor([2])])
    assert labels[0].tolist() == [2] and idx[0].tolist() == [0]
    iou = _build(_cfg("model.variant=c5")).roi_heads
    assert iou.assign_targets_to_proposals([props], [gt], [torch.tensor([2])])[1][0].tolist() == [0]


# ---------------------------------------------------------------------------------- RFLA priors
def test_rfla_prior_of_dilated_maps_is_model_info_rf():
    for overrides in (
        ["model.variant=dc5"],
        ["model.variant=dc5", "model.backbone.dilations={layer4: [1, 2, 5, 9]}"],
        ["model.variant=dc4"],
        ["model.variant=c5", "model.backbone.reduce_channels=64"],
    ):
        cfg = _cfg(*overrides, "model.rpn.matcher=rfla")
        rpn = _build(cfg).rpn
        info = model_info(cfg, (64, 64))
        assert isinstance(rpn, RFLARegionProposalNetwork)
        assert rpn.priors["0"]["trf"] == info["receptive_field"]["layer4"]["rf"], overrides
        assert rpn.priors["0"]["stride"] == info["feature_strides"]["0"]
        assert rpn.priors["0"]["size"] == 0.5 * rpn.priors["0"]["trf"]  # erf_fraction 0.5
    # the HDC stack's RF: 755 px (tests/test_models_detector.py), so a 377.5 px prior
    hdc = _build(_cfg("model.variant=dc5", "model.backbone.dilations={layer4: [1, 2, 5, 9]}",
                      "model.rpn.matcher=rfla", "model.rpn.rfla.erf_fraction=0.25"))  # fmt: skip
    assert hdc.rpn.priors["0"]["trf"] == 755 and hdc.rpn.priors["0"]["size"] == 755 / 4


def test_rfla_prior_of_fpn_levels_by_hand():
    # ResNet-18: conv1 7x7/2 -> RF 7, jump 2; maxpool 3x3/2 -> 7 + 2*2 = 11, jump 4;
    # layer1, four 3x3 at jump 4 -> 11 + 4*8 = 43 (C2); layer2: 3x3/2 at jump 4 -> 51, jump 8,
    # three 3x3 -> 51 + 3*16 = 99 (C3); layer3 -> 99 + 16 + 3*32 = 211 (C4);
    # layer4 -> 211 + 32 + 3*64 = 435 (C5). FPN: the 1x1 lateral adds 0, the 3x3 output conv
    # 2 * jump: P2 43 + 8 = 51, P3 99 + 16 = 115, P4 211 + 32 = 243, P5 435 + 64 = 499;
    # "pool" (P6) is P5 subsampled by a 1x1 max-pool of stride 2: RF 499, stride 64.
    rpn = _build(_cfg("model.variant=fpn", "model.rpn.matcher=rfla")).rpn
    got = {n: (p["trf"], p["stride"]) for n, p in rpn.priors.items()}
    assert got == {"0": (51, 4), "1": (115, 8), "2": (243, 16), "3": (499, 32), "pool": (499, 64)}
    assert rpn.priors["0"]["size"] == 25.5
    # ResNet-50's C2-C5 (P_l less its 3x3 output conv) are RFLA's own table: 35, 91, 267, 427
    r50 = _build(_cfg("model.variant=fpn", "model.backbone.depth=50", "model.rpn.matcher=rfla"))
    c = [r50.rpn.priors[n]["trf"] - 2 * r50.rpn.priors[n]["stride"] for n in ["0", "1", "2", "3"]]
    assert c == [35, 91, 267, 427]


# -------------------------------------------------------------------------- RFLA by hand, grid
def _rfla_rpn(*overrides: str) -> RFLARegionProposalNetwork:
    return _build(_cfg("model.variant=dc5", "model.rpn.matcher=rfla", *overrides)).rpn


def test_rfla_positives_on_a_stride16_grid_by_hand():
    # a 64x64 image at stride 16: points at x, y in {0, 16, 32, 48}; one 16 px anchor per point.
    # The box [20, 2, 36, 18] has centre (28, 10). On one map every prior has the same size
    # (0.5 x 467 px) and the box is square, so the RFD ranks points by distance to the centre:
    # (32, 16): 4^2 + 6^2 = 52; (32, 0): 4^2 + 10^2 = 116; (16, 16): 12^2 + 6^2 = 180;
    # (16, 0): 244; (48, 16): 436; ... topk [3, 1]: the first three are positives; the second
    # pass (priors x 0.9, top 1) takes (32, 16) again, already positive. A 233 px prior scores
    # ~0.001 with a 16 px box, far below the 0.8 ignore score: every other point is a negative.
    rpn = _rfla_rpn("model.anchors.sizes=[16]", "model.anchors.aspect_ratios=[1.0]")
    assert rpn.topk == [3, 1] and rpn.ratio == 0.9 and rpn.priors["0"]["trf"] == 467
    anchors = image_anchors(rpn.anchor_generator, [16], 64, 64)
    gt = torch.tensor([[20.0, 2.0, 36.0, 18.0]])
    matched = match_anchors(rpn, anchors, gt, [("0", 4, 4)])
    centres = (anchors[:, :2] + anchors[:, 2:]) / 2
    positives = {tuple(c) for c in centres[matched == 0].int().tolist()}
    assert positives == {(32, 16), (32, 0), (16, 16)}
    assert (matched[matched != 0] == NEGATIVE).all()

    # the training path (forward notes the grid, then assign_targets_to_anchors) agrees
    rpn.train()
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    feats = {"0": torch.zeros(1, rpn.head.conv[0][0].in_channels, 4, 4)}
    targets = [{"boxes": gt}]
    rpn(images, feats, targets)
    labels, boxes = rpn.assign_targets_to_anchors([anchors], targets)
    assert torch.equal(labels[0], (matched >= 0).float())
    assert torch.equal(boxes[0][matched == 0], gt.expand(3, 4))


def test_rfla_takes_one_anchor_per_positive_point():
    # 6 anchors per point (16 and 32 px, ratios 0.5, 1, 2) share the point's prior: the same
    # three points win; at each, the anchor that fits the box best (IoU) is the positive and
    # the point's other anchors are ignored
    rpn = _rfla_rpn("model.anchors.sizes=[16, 32]", "model.anchors.aspect_ratios=[0.5, 1.0, 2.0]")
    anchors = image_anchors(rpn.anchor_generator, [16], 64, 64)
    gt = torch.tensor([[20.0, 2.0, 36.0, 18.0]])
    matched = match_anchors(rpn, anchors, gt, [("0", 4, 4)]).view(16, 6)
    per_point = anchors.view(16, 6, 4)
    centres = ((per_point[:, 0, :2] + per_point[:, 0, 2:]) / 2).int().tolist()
    taken = [tuple(centres[p]) for p in range(16) if (matched[p] == 0).any()]
    assert sorted(taken) == [(16, 16), (32, 0), (32, 16)]
    for p in range(16):
        if tuple(centres[p]) in taken:
            ious = box_iou(gt, per_point[p])[0]
            assert torch.equal(matched[p] == 0, ious == ious.max())
            assert set(matched[p].tolist()) == {0, IGNORE}
        else:
            assert (matched[p] == NEGATIVE).all()


def test_rfla_second_pass_and_ignore_by_hand():
    # four points, a 16 px box centred at (8, 8); prior sizes s, box side w = 16, t = (s / w)^2.
    # Centred point: KL = t - ln t - 1; a point d px off in x adds 0.5 * d^2 / (w^2 / 4).
    #   P0 centred, s = 1.1 w:  pass 1 t = 1.21 -> 0.0194; pass 2 (x0.9) t = 0.98 -> 0.0002
    #   P1 centred, s = 0.95 w: pass 1 t = 0.9025 -> 0.0051; pass 2 t = 0.731 -> 0.0444
    #   P2 2 px off, s = w:     pass 1 0 + 0.03125; pass 2 t = 0.81 -> 0.0207 + 0.03125 = 0.052
    #   P3 far away: score ~0
    # topk [1, 1]: pass 1 takes P1 (lowest KL), pass 2 takes P0 (the larger prior fits once
    # shrunk). P2 is no positive but scores 1 / (1 + 0.052) = 0.95 >= 0.8: ignored. P3: negative.
    gt = torch.tensor([[0.0, 0.0, 16.0, 16.0]])
    centers = torch.tensor([[8.0, 8.0], [8.0, 8.0], [10.0, 8.0], [100.0, 100.0]])
    sizes = torch.tensor([17.6, 15.2, 16.0, 16.0])
    kl = 1 / rfd_score(gt, centers, sizes)[0] - 1
    assert kl[:3].tolist() == pytest.approx([0.0194, 0.0051, 0.03125], abs=2e-4)
    got = rfla_assign(gt, centers, sizes, topk=[1, 1], ratio=0.9)
    assert got.tolist() == [0, 0, IGNORE, NEGATIVE]
    # without the second pass P0 is not taken; its pass-1 score 0.98 makes it ignored
    assert rfla_assign(gt, centers, sizes, topk=[1]).tolist() == [
        IGNORE, 0, IGNORE, NEGATIVE,
    ]  # fmt: skip


def test_rfla_point_two_boxes_want_goes_to_the_better_fit():
    # both boxes are centred on the only point; the 16 px prior fits the 16 px box (KL 0) better
    # than the 40 px one (t = 0.16: KL 0.16 - ln 0.16 - 1 = 0.99). HieAssigner would give the
    # point to the later box.
    gt = torch.tensor([[-8.0, -8.0, 8.0, 8.0], [-20.0, -20.0, 20.0, 20.0]])
    got = rfla_assign(gt, torch.zeros(1, 2), torch.tensor([16.0]), topk=[1, 1])
    assert got.tolist() == [0]


def test_rfla_config_errors():
    with pytest.raises(ConfigError, match="topk must be"):
        _build(_cfg("model.variant=c5", "model.rpn.matcher=rfla", "model.rpn.rfla.topk=[3,1,1]"))
    cfg = _cfg("model.variant=c5")
    cfg["model"]["rpn"]["matcher"] = "nwdd"  # past the loader's own check
    with pytest.raises(ConfigError, match="did you mean 'nwd'"):
        _build(cfg)
    cfg = _cfg("model.variant=c5")
    cfg["model"]["roi"]["matcher"] = "rfla"
    with pytest.raises(ConfigError, match="model.roi.matcher must be one of iou, nwd"):
        _build(cfg)


# ----------------------------------------------------------------------- training, every variant
@pytest.mark.parametrize("variant", VARIANTS)
def test_nwd_and_rfla_train_on_every_variant(variant):
    for extra in (["model.rpn.matcher=nwd", "model.roi.matcher=nwd"], ["model.rpn.matcher=rfla"]):
        cfg = _cfg(f"model.variant={variant}", "model.anchors.sizes=[16,32,64,128,256]", *extra)
        losses = _losses(_seeded(cfg))
        assert set(losses) == {"loss_classifier", "loss_box_reg", "loss_objectness",
                               "loss_rpn_box_reg"}  # fmt: skip
        assert all(torch.isfinite(v) for v in losses.values()), (variant, extra, losses)
        assert losses["loss_rpn_box_reg"] > 0  # the matcher found positives


def test_matchers_keep_the_parameters_and_checkpoint_keys():
    base = _cfg("model.variant=fpn")
    ref = _seeded(base).state_dict()
    for extra in ("model.rpn.matcher=nwd", "model.rpn.matcher=rfla", "model.roi.matcher=nwd"):
        sd = _seeded(_cfg("model.variant=fpn", extra)).state_dict()
        assert list(sd) == list(ref)
        assert all(torch.equal(sd[k], ref[k]) for k in ref)


# ------------------------------------------------------------------------- iou: bit-identical
def test_iou_is_torchvisions_path_and_bit_identical(monkeypatch):
    for variant in ("dc5", "fpn"):
        default = _cfg(f"model.variant={variant}")
        explicit = _cfg(
            f"model.variant={variant}", "model.rpn.matcher=iou", "model.roi.matcher=iou"
        )
        m = _seeded(explicit)
        assert type(m.rpn) is RegionProposalNetwork and type(m.roi_heads) is RoIHeads
        assert m.rpn.box_similarity is box_iou
        matcher = m.rpn.proposal_matcher
        assert type(matcher) is det_utils.Matcher and matcher.allow_low_quality_matches
        assert (matcher.high_threshold, matcher.low_threshold) == (0.7, 0.3)
        got, ref = _losses(m), _losses(_seeded(default))
        assert got.keys() == ref.keys() and all(torch.equal(got[k], v) for k, v in ref.items())
        # the old build: FasterRCNN as constructed, with no matcher wiring at all
        with monkeypatch.context() as mp:
            mp.setattr(detector_module, "configure_matchers", lambda model, mcfg: None)
            old = _losses(_seeded(default))
        assert all(torch.equal(got[k], v) for k, v in old.items()), (variant, got, old)
        # and the matcher is really wired: nwd / rfla change the RPN's losses
        for other in ("nwd", "rfla"):
            changed = _losses(
                _seeded(_cfg(f"model.variant={variant}", f"model.rpn.matcher={other}"))
            )
            assert not torch.equal(changed["loss_objectness"], got["loss_objectness"])


# ------------------------------------------------------------------------------ anchor coverage
def _coco(boxes: list[list[float]], size: int = 64) -> dict:
    anns = [
        {"id": i + 1, "image_id": 1, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
        for i, b in enumerate(boxes)
    ]
    return {"images": [{"id": 1, "height": size, "width": size}], "annotations": anns}


def test_anchor_coverage_honours_the_matcher():
    # a 16 px box at (2, 2) on the stride-16 grid with one 16 px anchor per point: its best
    # anchor (centre (16, 16)) has IoU 10*10 / (512 - 100) = 0.24 and NWD 0.515, below both
    # 0.7 thresholds, so iou and nwd give it one fallback positive. RFLA takes its top 3 points:
    # (16, 16) at 6^2 + 6^2 = 72, then (0, 16) and (16, 0) tied at 10^2 + 6^2 = 136.
    data = _coco([[2, 2, 16, 16]])
    grid = ["model.variant=dc5", "model.anchors.sizes=[16]", "model.anchors.aspect_ratios=[1.0]"]
    rows = {}
    for m in ("iou", "nwd", "rfla"):
        res = anchor_coverage(_cfg(*grid, f"model.rpn.matcher={m}"), data, bins="coco")
        assert res["matcher"] == m and f"RPN matcher {m}" in res["matcher_rule"]
        rows[m] = res["bins"]["small"]
    assert rows["iou"]["median_best_iou"] == pytest.approx(100 / 412)
    assert [rows[m]["matched_positives"] for m in ("iou", "nwd", "rfla")] == [1.0, 1.0, 3.0]
    assert all(rows[m]["matched"] == 1.0 for m in rows)
    assert rows["iou"]["positive_iou"] == pytest.approx(100 / 412)
    # the IoU view does not depend on the matcher
    iou_view = ("median_best_iou", "above_fg", "above_05", "low_quality_only", "mean_positives")
    assert all(rows["rfla"][k] == rows["iou"][k] for k in iou_view)
    # lowering NWD's threshold to 0.5 makes that anchor a real positive, still one
    res = anchor_coverage(
        _cfg(*grid, "model.rpn.matcher=nwd", "model.rpn.nwd.fg_thresh=0.5"), data, bins="coco"
    )
    assert res["bins"]["small"]["matched_positives"] == 1.0


def test_anchor_coverage_reports_fpn_levels():
    res = anchor_coverage(
        _cfg("model.variant=fpn", "model.rpn.matcher=rfla"), _coco([[20, 20, 16, 16]]), bins="coco"
    )
    assert res["strides"] == [4, 8, 16, 32, 64] and res["maps"] == ["0", "1", "2", "3", "pool"]
    levels = res["bins"]["small"]["positive_levels"]
    assert levels["0"] == 1.0  # a 16 px box: P2's 25.5 px prior fits it best


def test_anchor_coverage_skips_degenerate_boxes_in_the_matcher_view():
    # a zero-width box never reaches training (torchvision refuses it): no positives, no error
    grid = ["model.variant=dc5", "model.anchors.sizes=[16]", "model.anchors.aspect_ratios=[1.0]"]
    cfg = _cfg(*grid, "model.rpn.matcher=rfla")
    res = anchor_coverage(cfg, _coco([[2, 2, 16, 16], [30, 30, 0, 10]]), bins="coco")
    assert res["bins"]["all"]["count"] == 2
    assert res["bins"]["all"]["matched"] == 0.5
    assert res["bins"]["all"]["matched_positives"] == pytest.approx(1.5)  # (3 + 0) / 2
