"""TridentNet (``model.trident``): shared weights, per-branch maps, scale-aware routing, merging,
the per-branch report, config checks, the fingerprint, and an exact resume.

Every expected number is worked out by hand in a comment: R18 receptive fields with
k' = k + (k - 1)(d - 1), the uniform-weight ERF variance, the labels of a hand-made target set.
"""

from __future__ import annotations

import json
import math
import signal
import warnings
from pathlib import Path

import pytest
import torch

from detector.config import load_config
from detector.config.loader import ConfigError
from detector.engine.checkpoint import (
    CheckpointError,
    check_fingerprint,
    config_fingerprint,
    model_file,
    resolved_dilations,
)
from detector.models import build_backbone, build_detector, count_parameters, model_info
from detector.models.trident import (
    BRANCH_KEY,
    TridentBackbone,
    TridentFasterRCNN,
    default_ranges,
)

ROOT = Path(__file__).resolve().parents[1]
TRIDENT = ROOT / "configs" / "faster_rcnn_r18_trident.yaml"
DC5 = ROOT / "configs" / "faster_rcnn_r18_dc5.yaml"
LIGHT = ["model.roi.representation_size=32"]  # a small box head: the heads are not under test
HAND_RANGES = "model.trident.ranges=[[0, 16], [12, 40], [32, .inf]]"


def _build(path: Path, overrides: list[str], kind=build_detector, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # uniform rates fail HDC rule 1 on purpose
        return kind(load_config(path, overrides), **kw)


# ----------------------------------------------------------------------------------- weights
def test_branches_share_the_same_weight_tensors():
    trident = _build(TRIDENT, [], build_backbone)
    dc5 = _build(DC5, [], build_backbone)
    assert isinstance(trident, TridentBackbone)
    # one tensor per conv: the same names and count as the single-branch model, no duplicates
    assert [n for n, _ in trident.named_parameters()] == [n for n, _ in dc5.named_parameters()]
    assert count_parameters(trident) == count_parameters(dc5)
    assert len({p.data_ptr() for p in trident.parameters()}) == len(list(trident.parameters()))

    conv = trident.body.layer4[0].conv1
    calls = []
    handle = conv.register_forward_hook(lambda m, i, o: calls.append((m.dilation, m.weight)))
    try:
        trident(torch.rand(1, 3, 64, 64), [0, 1, 2])
    finally:
        handle.remove()
    # the one module runs three times, at rates 2 x [1, 2, 3], always with the same tensor
    assert [d for d, _ in calls] == [(2, 2), (4, 4), (6, 6)]
    assert all(w is conv.weight for _, w in calls)
    assert conv.dilation == (2, 2)  # back to the default branch after the forward

    # the branch-2 pass alone trains the shared weight
    trident.zero_grad()
    trident(torch.rand(1, 3, 64, 64), [2])["0"].sum().backward()
    assert conv.weight.grad is not None and conv.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "variant, stage, base, stride",
    [("dc5", "layer4", 2, 16), ("dc5", "layer3", 1, 16), ("c5", "layer4", 1, 32)],
)
def test_each_branch_is_the_plain_model_at_its_rates(variant, stage, base, stride):
    opts = [f"model.variant={variant}", f"model.trident.stage={stage}"]
    trident = _build(TRIDENT, opts, build_backbone).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        out = trident(x, [0, 1, 2])["0"]
    side = 64 // stride
    assert out.shape == (6, 512, side, side)  # branch-major: 3 branches x 2 images
    for k, mult in enumerate([1, 2, 3]):
        rate = base * mult
        plain_opts = [
            f"model.variant={variant}",
            f"model.backbone.dilations={{{stage}: {[rate] * 2}}}",
        ]
        plain = _build(DC5, plain_opts, build_backbone).eval()
        plain.load_state_dict(trident.state_dict())
        with torch.no_grad():
            want = plain(x)["0"]
        assert plain.output_stride == stride
        torch.testing.assert_close(out[2 * k : 2 * k + 2], want, rtol=0, atol=1e-5)
        with trident.only_branch(k), torch.no_grad():
            assert trident.rates[stage] == [rate] * 4
            torch.testing.assert_close(trident(x)["0"], want, rtol=0, atol=1e-5)


# ------------------------------------------------------------------------------- routing
# Five boxes of sizes 8, 14, 24, 36, 60 px on a 256 px image, and two background boxes of 10 and
# 50 px away from them; the ranges [0, 16], [12, 40], [32, inf] give
#   branch 0: 8, 14       branch 1: 14, 24, 36       branch 2: 36, 60
GT = torch.tensor(
    [[0, 0, 8, 8], [20, 0, 34, 14], [40, 0, 64, 24], [70, 0, 106, 36], [120, 0, 180, 60]],
    dtype=torch.float32,
)
GT_LABELS = torch.tensor([1, 2, 1, 2, 1])
BACKGROUND = torch.tensor([[200, 200, 210, 210], [190, 150, 240, 200]], dtype=torch.float32)


def test_rpn_and_roi_route_boxes_and_proposals_by_size():
    model = _build(TRIDENT, [*LIGHT, HAND_RANGES], num_classes=2)
    assert model.trident_ranges == [(0.0, 16.0), (12.0, 40.0), (32.0, math.inf)]
    boxes = torch.cat([GT, BACKGROUND])  # as anchors / proposals: each GT matches itself
    targets = [{"boxes": GT, "labels": GT_LABELS, BRANCH_KEY: k} for k in range(3)]
    labels, matched = model.rpn.assign_targets_to_anchors([boxes] * 3, targets)
    # RPN: a positive on an out-of-range box is ignored (-1); anchors are not filtered by size
    assert [lab.tolist() for lab in labels] == [
        [1, 1, -1, -1, -1, 0, 0],
        [-1, 1, 1, 1, -1, 0, 0],
        [-1, -1, -1, 1, 1, 0, 0],
    ]
    assert torch.equal(matched[1][:5], GT)

    roi = model.roi_heads
    roi._branches = [0, 1, 2]
    _, labels = roi.assign_targets_to_proposals([boxes] * 3, [GT] * 3, [GT_LABELS] * 3)
    # RoI head: also a proposal whose own size is out of range is ignored (the 10 px background
    # box for branch 1 and 2, the 50 px one for branch 0 and 1)
    assert [lab.tolist() for lab in labels] == [
        [1, 2, -1, -1, -1, 0, -1],
        [-1, 2, 1, 2, -1, -1, -1],
        [-1, -1, -1, 2, 1, -1, 0],
    ]

    # without scale-aware training every branch learns every box
    plain = _build(TRIDENT, [*LIGHT, "model.trident.scale_aware=false"], num_classes=2)
    labels, _ = plain.rpn.assign_targets_to_anchors([boxes] * 3, targets)
    assert all(lab.tolist() == [1, 1, 1, 1, 1, 0, 0] for lab in labels)


@pytest.mark.parametrize(
    "rpn, roi, rpn_cls, roi_cls",
    [
        ("nwd", "nwd", "TridentRPN", "TridentSimilarityRoIHeads"),
        ("rfla", "iou", "TridentRFLARPN", "TridentRoIHeads"),
    ],
)
def test_composes_with_the_matchers(rpn, roi, rpn_cls, roi_cls):
    opts = [*LIGHT, f"model.rpn.matcher={rpn}", f"model.roi.matcher={roi}"]
    model = _build(TRIDENT, opts, num_classes=2)
    assert (type(model.rpn).__name__, type(model.roi_heads).__name__) == (rpn_cls, roi_cls)
    if rpn == "rfla":
        # each branch its own prior: erf_fraction 0.5 x the branch's RF (467, 723, 979 px)
        sizes = [p["0"]["size"] for p in model.rpn.branch_priors]
        assert sizes == [233.5, 361.5, 489.5]
        assert model.rpn.priors["0"]["size"] == 233.5  # the default branch between steps
    model.train()
    images = [torch.rand(3, 64, 64), torch.rand(3, 64, 64)]
    targets = [
        {"boxes": torch.tensor([[8.0, 8.0, 24.0, 20.0]]), "labels": torch.tensor([1])},
        {"boxes": torch.tensor([[30.0, 40.0, 42.0, 52.0]]), "labels": torch.tensor([2])},
    ]
    losses = model(images, targets)
    assert torch.isfinite(sum(losses.values()))


# ------------------------------------------------------------------------------ inference
def _dets(rows):
    t = torch.tensor(rows, dtype=torch.float32)
    return {"boxes": t[:, :4], "scores": t[:, 4], "labels": t[:, 5].long()}


def test_inference_merges_branches_within_their_ranges():
    model = _build(TRIDENT, [*LIGHT, HAND_RANGES], num_classes=2)
    dets = [  # x1, y1, x2, y2, score, label; sizes in the comments
        _dets([[0, 0, 10, 10, 0.9, 1], [50, 50, 100, 100, 0.95, 1]]),  # 10 in b0; 50 out
        _dets([[0, 0, 10, 11, 0.8, 1], [20, 20, 40, 40, 0.7, 2]]),  # 10.5 out (< 12); 20 in
        _dets([[51, 51, 100, 100, 0.6, 1], [20, 20, 40, 40, 0.5, 1]]),  # 49 in b2; 20 out
    ]
    merged = model.merge_branches(dets, [0, 1, 2], 1)[0]
    assert merged["scores"].tolist() == pytest.approx([0.9, 0.7, 0.6])
    assert merged["labels"].tolist() == [1, 2, 1]
    # without the range filter: NMS at 0.5 drops the 10.5 px box (IoU 0.91 with the 0.9 one)
    # and the 49 px one (IoU 0.96 with the 0.95 one); the class-1 copy of the 20 px box stays
    model.scale_aware = False
    merged = model.merge_branches(dets, [0, 1, 2], 1)[0]
    assert merged["scores"].tolist() == pytest.approx([0.95, 0.9, 0.7, 0.5])
    model.roi_heads.detections_per_img = 2
    assert model.merge_branches(dets, [0, 1, 2], 1)[0]["scores"].tolist() == pytest.approx(
        [0.95, 0.9]
    )


def test_test_branch_runs_one_branch_alone():
    model = _build(TRIDENT, [*LIGHT, "model.trident.test_branch=1"], num_classes=2).eval()
    assert isinstance(model, TridentFasterRCNN) and model.test_branches() == [1]
    conv = model.backbone.body.layer4[0].conv1
    calls = []
    handle = conv.register_forward_hook(lambda m, i, o: calls.append(m.dilation))
    try:
        with torch.no_grad():
            out = model([torch.rand(3, 64, 64)])
    finally:
        handle.remove()
    assert calls == [(4, 4)] and set(out[0]) == {"boxes", "labels", "scores"}
    model.train()
    assert model.test_branches() == [0, 1, 2]  # training always runs every branch


# --------------------------------------------------------------------------------- report
def test_info_reports_each_branch_and_the_dc5_parameter_count(capsys):
    from detector.cli.info import main

    assert main(["--config", str(TRIDENT), "--input-size", "64", "64", "--json"]) == 0
    out = capsys.readouterr().out
    assert "Infinity" not in out  # strict JSON: an open range ends in null
    info = json.loads(out)
    dc5 = model_info(load_config(DC5), (64, 64))
    assert info["params"] == dc5["params"] and info["params_backbone"] == dc5["params_backbone"]
    # R18 RF: stem 7, maxpool 11 (jump 4), layer1 43, layer2 99 (jump 8), layer3 211 (jump 16);
    # layer4's four 3x3 convs at rate d add (k' - 1) x 16 = 2d x 16 each: 211 + 128 d
    # with d = 2, 4, 6: 467, 723, 979
    branches = info["branches"]
    assert [b["rates"]["layer4"] for b in branches] == [[2] * 4, [4] * 4, [6] * 4]
    assert [b["receptive_field"]["layer4"]["rf"] for b in branches] == [467, 723, 979]
    assert [b["rf"] for b in branches] == [467, 723, 979]
    assert all(b["receptive_field"]["layer3"] == {"rf": 211, "jump": 16} for b in branches)
    assert info["receptive_field"]["layer4"]["rf"] == 467  # the default branch
    # ERF variance, sum of (jump_before d)^2 (k^2 - 1) / 12: up to layer3 4 + 8/3 + 4 x 32/3
    # + 32/3 + 3 x 128/3 + 128/3 + 3 x 512/3 = 742 2/3; layer4 adds 4 x 256 d^2 x 8/12.
    # 2 sigma = 117.87, 216.01, 318.24 px; the ranges are [s_{k-1}, s_{k+1}]
    sig = [2 * math.sqrt(742 + 2 / 3 + 4 * 256 * d * d * 8 / 12) for d in (2, 4, 6)]
    assert [b["erf_size"] for b in branches] == pytest.approx(sig, abs=0.01)
    assert sig == pytest.approx([117.87, 216.01, 318.24], abs=0.01)
    assert [b["range"] for b in branches] == [
        [0.0, round(sig[1], 2)],
        [round(sig[0], 2), round(sig[2], 2)],
        [round(sig[1], 2), None],
    ]
    # gridding of four convs at rate r: 9 used offsets per axis in a 8r + 1 wide field
    assert [b["gridding"]["holes"] for b in branches] == [17**2 - 81, 33**2 - 81, 49**2 - 81]
    assert not any(b["hdc"]["valid"] for b in branches) and not info["hdc"]["valid"]
    assert info["trident"] == {
        "stage": "layer4",
        "branch_rates": [1, 2, 3],
        "scale_aware": True,
        "test_branch": -1,
        "default_branch": 0,
    }
    assert info["flops"] > dc5["flops"]  # all three branches are counted


def test_default_ranges_follow_the_papers_pattern():
    assert default_ranges([30, 90, 160]) == [(0, 90), (30, 160), (90, math.inf)]
    assert default_ranges([50]) == [(0, math.inf)]


# --------------------------------------------------------------------------- config, files
@pytest.mark.parametrize(
    "override, words",
    [
        ("model.variant=fpn", "needs a single-map variant"),
        ("model.trident.branch_rates=[2, 1]", "strictly increasing"),
        ("model.trident.test_branch=3", "0-2"),
        ("model.trident.ranges=[[0, 16], [12, 40]]", "one [low, high] per branch"),
        ("model.trident.ranges=[[0, 16], [12, 40], [50, 32]]", "model.trident.ranges[2]"),
        ("model.trident.stage=layer0", "valid: layer1, layer2, layer3, layer4"),
    ],
)
def test_bad_trident_config_fails_at_load(override, words):
    with pytest.raises(ConfigError, match="command-line override") as err:
        load_config(TRIDENT, [override])
    assert words in str(err.value)


def test_fingerprint_holds_the_branch_rates():
    trident, dc5 = load_config(TRIDENT), load_config(DC5)
    assert resolved_dilations(dc5) == {"layer4": [2, 2, 2, 2]}
    assert resolved_dilations(trident) == {"layer4": [[2] * 4, [4] * 4, [6] * 4]}
    fp = config_fingerprint(trident, 2)
    assert fp != config_fingerprint(dc5, 2)
    assert fp != config_fingerprint(load_config(TRIDENT, ["model.trident.branch_rates=[1, 2]"]), 2)
    # the test-time choice of branch is not part of what the weights mean
    assert fp == config_fingerprint(load_config(TRIDENT, ["model.trident.test_branch=0"]), 2)
    saved = model_file({}, trident, num_classes=2, iteration=1)
    with pytest.raises(CheckpointError, match="dilations"):
        check_fingerprint(saved, dc5, 2, "model_final.pth")
    with pytest.raises(CheckpointError, match="dilations"):
        check_fingerprint(model_file({}, dc5, 2, 1), trident, 2, "model_final.pth")


@pytest.mark.slow
def test_trident_run_killed_and_resumed_is_bit_identical_and_scores_per_branch(
    tmp_path, tiny_cache, tiny_config, run_train
):
    extra = {
        "model": {"trident": {"enabled": True}},
        "solver": {"max_iter": 2},
        "checkpoint": {"period": 1},
    }
    cfg = tiny_config(tmp_path / "trident.yaml", tiny_cache, extra)
    env = {"OMP_NUM_THREADS": "1"}
    a = run_train(cfg, tmp_path / "a", env=env)
    assert a.returncode == 0, a.stderr[-3000:]
    b = run_train(cfg, tmp_path / "b", env={**env, "SMALLDET_KILL_AT_ITER": "1"})
    assert b.returncode == -signal.SIGKILL, b.stderr[-3000:]
    assert (tmp_path / "b" / "last_checkpoint").read_text().strip() == "model_0000001.pth"
    b2 = run_train(cfg, tmp_path / "b", "--resume", env=env)
    assert b2.returncode == 0, b2.stderr[-3000:]
    assert "at iteration 1" in b2.stdout

    fa = torch.load(tmp_path / "a" / "model_final.pth", weights_only=True)
    fb = torch.load(tmp_path / "b" / "model_final.pth", weights_only=True)
    assert fa["fingerprint"] == fb["fingerprint"]
    assert fa["signature"]["dilations"] == {"layer4": [[2] * 4, [4] * 4, [6] * 4]}
    wa, wb = fa["model"], fb["model"]
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert wa.keys() == wb.keys() and not different, different[:3]

    # one branch alone through `smalldet evaluate` (the fingerprint lets test_branch differ)
    from detector.cli.evaluate import main as evaluate

    report = tmp_path / "branch0.json"
    args = ["--config", str(cfg), "--checkpoint", str(tmp_path / "a" / "model_final.pth")]
    args += ["--opts", "model.trident.test_branch=0", "--json", str(report), "--no-errors"]
    assert evaluate(args) == 0
    assert "AP" in json.loads(report.read_text())
