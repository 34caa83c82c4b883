"""TridentNet (Li et al. 2019, "Scale-Aware Trident Networks for Object Detection") on the
single-map detectors, with its scale-aware training (docs/trident.md).

**An option, not a variant** (``model.trident.enabled`` on c5 / dc5 / dc4): a variant here says
which stages trade their stride for dilation, and that choice is independent of running a stage
as branches; a ``trident`` variant would have to repeat the stride logic of dc5 and dc4 (and
every place that reads the variant: output stride, fingerprint, anchors). As an option, a dc5
trident *is* a dc5 model (same modules, same state-dict keys, same parameter count) whose
``model.trident.stage`` runs once per branch.

**Branches.** Branch ``k`` runs every 3x3 conv of the stage at the stage's own rates (the
variant's default or ``model.backbone.dilations``) times ``branch_rates[k]``: dc5 with
``[1, 2, 3]`` gives layer4 rates 2, 4, 6. The branches share the conv modules themselves:
:class:`TridentBackbone` switches the convs' ``dilation`` and ``padding`` before each branch,
so there is one weight tensor per conv and autograd sums the branches' gradients into it. The
branches' maps are stacked on the batch axis (branch-major: ``[branch 0 images, branch 1
images, ...]``), the stages after the trident stage run once on that stack, and the RPN and RoI
head see ``N x B`` images: the trident stage and everything after it cost N times a
single-branch model in training (and at test with all branches). A batch-statistics norm
(``bn``) in the trident stage normalises each branch with its own statistics and updates its
running statistics once per branch. The HDC rules are checked per branch, on the rates of that
branch's whole network, as :mod:`detector.models.backbone` checks a plain model.

**Scale-aware training.** Branch ``k`` owns the boxes whose ``sqrt(w h)`` (model-input px)
lies in ``[low_k, high_k]``. The boxes stay in every branch's matching, so the matcher
(``model.rpn.matcher`` iou / nwd / rfla, ``model.roi.matcher`` iou / nwd) is unchanged; then an
anchor or proposal the matcher gives to a box outside the branch's range is *ignored* (neither
positive nor negative: SimpleDet, the authors' code, ignores anchors on out-of-range boxes
rather than calling them background), and so is a proposal whose own size is outside the range
("invalid proposals are ignored", the paper's R-CNN rule). RFLA's receptive-field prior is the
branch's own. At test time, with all branches, each branch keeps only the detections in its
range before the merge.

**Default ranges** (``model.trident.ranges: []``), from each branch's receptive field: the
paper's ranges for 800 px COCO, ``[0, 90], [30, 160], [90, inf]``, are ``[s_{k-1}, s_{k+1}]``
for the scales ``s = (30, 90, 160)`` (the first low is 0 and the last high is inf). Here
``s_k`` is the side of the box whose Gaussian matches branch k's effective receptive field:
Luo et al. (2016) show the ERF of a linear stack with uniform weights is the convolution of its
layers' uniform kernels, i.e. a near-Gaussian of variance ``sum_l jump_{l-1}^2 d_l^2
(k_l^2 - 1) / 12`` along the path the receptive-field walk follows, and a box of side ``w`` is
read as ``N(c, (w / 2)^2)`` (NWD and RFLA here), so ``s_k = 2 sigma_k``
(:func:`erf_sigma`). R18-DC5 with ``[1, 2, 3]``: ``s = 118, 216, 318`` px, ranges ``[0, 216],
[118, 318], [216, inf]``. On data of mostly tiny objects nearly every box lands in branch 0's
range; set ``model.trident.ranges`` to split those sizes.

**Inference.** ``model.trident.test_branch: -1`` runs all branches and merges their detections
(class-wise NMS at ``model.roi.nms_thresh``, then the top ``detections_per_img``);
``test_branch: k`` runs branch ``k`` alone, unfiltered (TridentNet-Fast: the paper and
Detectron2 use the middle branch), at the cost of a single-branch model. Training always runs
all branches.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.image_list import ImageList
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork
from torchvision.ops import batched_nms

from detector.config.loader import ConfigError

from .backbone import STAGES, ResNetBackbone, hdc_rates, set_stage_dilation
from .gridding import coverage
from .hdc import HDCVerdict, check_hdc, enforce_hdc
from .matchers import RFLARegionProposalNetwork, SimilarityRoIHeads, rfla_priors
from .receptive_field import LayerRF, receptive_field, stage_receptive_fields

# the key a branch-image's target carries: which branch it is (routing and RFLA priors)
BRANCH_KEY = "trident_branch"
Range = tuple[float, float]


# ------------------------------------------------------------------------------- backbone
class TridentBackbone(ResNetBackbone):
    """A :class:`ResNetBackbone` whose ``stage`` runs once per branch with shared weights.

    ``forward(x, branches=None)`` returns ``{"0": [len(branches) * B, C, h, w]}``, branch-major.
    Without ``branches`` it runs the one branch :meth:`only_branch` selects (by default
    ``default_branch``), so that every tool that runs the backbone alone (receptive-field walk,
    ERF, anchor coverage) sees one plain dilated ResNet: that branch. Attributes beyond
    :class:`ResNetBackbone`'s: ``trident_stage``, ``multipliers``, ``branch_rates`` (each
    branch's per-conv rates of every stage), ``branch_hdc`` and ``default_branch``; ``rates``
    are those of the branch a plain forward runs and ``hdc`` is the verdict over all branches.
    """

    def __init__(
        self,
        body: nn.Module,
        out_channels: int,
        reduce: nn.Module | None,
        stage: str,
        multipliers: Sequence[int],
        base_rates: dict[str, list[int]],
        default_branch: int = 0,
    ) -> None:
        super().__init__(body, out_channels, reduce)
        self.trident_stage = stage
        self.multipliers = [int(m) for m in multipliers]
        self.branch_rates = [
            {
                name: [r * m for r in rates] if name == stage else list(rates)
                for name, rates in base_rates.items()
            }
            for m in self.multipliers
        ]
        self.branch_hdc = [check_hdc(hdc_rates(r), kernel=3) for r in self.branch_rates]
        self.default_branch = int(default_branch)
        self._active = self.default_branch
        self.rates = self.branch_rates[self.default_branch]
        self.set_branch(self.default_branch)

    @property
    def num_branches(self) -> int:
        return len(self.multipliers)

    def set_branch(self, k: int) -> None:
        """Give the trident stage's convs branch ``k``'s rates (their weights are untouched)."""
        stage = getattr(self.body, self.trident_stage)
        set_stage_dilation(stage, self.branch_rates[k][self.trident_stage], trade_stride=False)

    @contextmanager
    def only_branch(self, k: int) -> Iterator[TridentBackbone]:
        """Within the block, a plain ``forward(x)`` runs branch ``k`` and ``rates`` are its
        (for per-branch walks)."""
        if not 0 <= k < self.num_branches:
            raise IndexError(f"branch {k} out of range: the trident has {self.num_branches}")
        previous, self._active = self._active, k
        self.set_branch(k)
        self.rates = self.branch_rates[k]
        try:
            yield self
        finally:
            self._active = previous
            self.set_branch(previous)
            self.rates = self.branch_rates[previous]

    def forward(self, x: Tensor, branches: Sequence[int] | None = None) -> OrderedDict:
        b = self.body
        stages = [getattr(b, name) for name in STAGES]
        split = STAGES.index(self.trident_stage)
        x = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        for stage in stages[:split]:
            x = stage(x)
        outs = []
        try:
            for k in [self._active] if branches is None else branches:
                self.set_branch(k)
                outs.append(stages[split](x))
        finally:
            self.set_branch(self._active)
        y = outs[0] if len(outs) == 1 else torch.cat(outs, dim=0)
        for stage in stages[split + 1 :]:
            y = stage(y)
        if self.reduce is not None:
            y = self.reduce(y)
        return OrderedDict([("0", y)])


def trident_settings(mcfg) -> tuple[str, list[int], int]:
    """``(stage, branch_rates, test_branch)`` of ``model.trident``, checked again for configs
    built in code (the loader checks them first, naming the file)."""
    t = mcfg.get("trident") or {}
    stage = t.get("stage", "layer4")
    rates = list(t.get("branch_rates", [1, 2, 3]))
    test_branch = t.get("test_branch", -1)
    if stage not in STAGES:
        raise ConfigError(f"model.trident.stage {stage!r}: valid {', '.join(STAGES)}")
    if (
        not rates
        or any(isinstance(r, bool) or not isinstance(r, int) or r < 1 for r in rates)
        or any(b <= a for a, b in zip(rates, rates[1:]))
    ):
        raise ConfigError(
            f"model.trident.branch_rates must be strictly increasing positive ints, got {rates!r}"
        )
    if isinstance(test_branch, bool) or not isinstance(test_branch, int):
        raise ConfigError(f"model.trident.test_branch must be an int, got {test_branch!r}")
    if not -1 <= test_branch < len(rates):
        raise ConfigError(
            f"model.trident.test_branch={test_branch}: give -1 (all branches) or 0-{len(rates) - 1}"
        )
    return stage, rates, test_branch


def combined_verdict(backbone: TridentBackbone) -> HDCVerdict:
    """One verdict for all branches (valid when every branch is), naming each branch."""
    parts, groups, ms = [], [], []
    for k, (m, v) in enumerate(zip(backbone.multipliers, backbone.branch_hdc)):
        parts.append(f"branch {k} ({backbone.trident_stage} x{m}): {v.message}")
        groups += v.groups
        ms += v.m_values
    verdicts = backbone.branch_hdc
    return HDCVerdict(
        rates=hdc_rates(backbone.rates),
        kernel=3,
        rule1_ok=all(v.rule1_ok for v in verdicts),
        rule2_ok=all(v.rule2_ok for v in verdicts),
        message="trident " + "; ".join(parts),
        groups=groups,
        m_values=ms,
    )


def make_trident_backbone(model: ResNetBackbone, mcfg) -> TridentBackbone:
    """``model``'s modules (not copies) as a :class:`TridentBackbone` for ``mcfg.trident``,
    its HDC rules checked per branch under ``model.backbone.hdc_check``."""
    if type(model) is not ResNetBackbone:
        raise ConfigError(
            f"model.trident needs a single-map ResNet backbone, got {type(model).__name__}"
        )
    stage, multipliers, test_branch = trident_settings(mcfg)
    trident = TridentBackbone(
        model.body,
        model.out_channels,
        model.reduce,
        stage,
        multipliers,
        model.rates,
        default_branch=max(test_branch, 0),
    )
    trident.output_stride = model.output_stride
    trident.hdc = combined_verdict(trident)
    enforce_hdc(trident.hdc, mcfg["backbone"].get("hdc_check", "warn"))
    return trident


# ------------------------------------------------------------------------ receptive fields
def erf_sigma(layers: Sequence[LayerRF]) -> float:
    """Standard deviation (px) of the uniform-weight ERF of a walked chain of convs/pools.

    Each layer spreads a unit over ``k`` taps ``d`` apart, in steps of the jump before it: a
    uniform distribution of variance ``(jump d)^2 (k^2 - 1) / 12``; the chain's ERF is their
    convolution, whose variance is the sum (Luo et al. 2016).
    """
    var = 0.0
    for layer in layers:
        before = layer.jump // layer.stride
        var += (before * layer.dilation) ** 2 * (layer.kernel**2 - 1) / 12
    return math.sqrt(var)


def branch_receptive_fields(backbone: TridentBackbone, input_size: int = 64) -> list[dict]:
    """Per branch: ``{rf, jump, erf_sigma, stages}`` of its output map, from the walk of the
    real module with that branch's rates (``stages``: :func:`stage_receptive_fields`)."""
    out = []
    for k in range(backbone.num_branches):
        with backbone.only_branch(k):
            layers = receptive_field(backbone, (1, 3, input_size, input_size))
            stages = stage_receptive_fields(backbone, input_size=input_size)
        out.append(
            {
                "rf": layers[-1].rf,
                "jump": layers[-1].jump,
                "erf_sigma": erf_sigma(layers),
                "stages": stages,
            }
        )
    return out


def default_ranges(scales: Sequence[float]) -> list[Range]:
    """The paper's pattern: branch ``k`` takes ``[s_{k-1}, s_{k+1}]``, 0 below the first, inf
    above the last (``(30, 90, 160)`` gives the paper's ``[0, 90], [30, 160], [90, inf]``)."""
    n = len(scales)
    return [
        (float(scales[k - 1]) if k > 0 else 0.0, float(scales[k + 1]) if k + 1 < n else math.inf)
        for k in range(n)
    ]


def box_sizes(boxes: Tensor) -> Tensor:
    """``sqrt(w h)`` of (x1, y1, x2, y2) boxes: the size the ranges (and the size bins) use."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0)
    return (wh[:, 0] * wh[:, 1]).sqrt()


def in_range(boxes: Tensor, rng: Range) -> Tensor:
    """[N] bool: the boxes whose size lies in the closed interval ``rng``."""
    s = box_sizes(boxes)
    return (s >= rng[0]) & (s <= rng[1])


# ------------------------------------------------------------------------- routing in heads
class _TridentRPNMixin:
    """The RPN's own assignment per branch-image, then positives on a box outside the branch's
    range become ignored (-1). Validity depends only on the matched box's size, so the matched
    boxes the RPN returns are enough. With RFLA each branch matches with its own prior."""

    trident_ranges: list[Range] | None = None  # None: no scale-aware routing
    branch_priors: list[dict] | None = None  # RFLA: one prior table per branch

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        labels, matched = [], []
        default = getattr(self, "priors", None)
        try:
            for a, t in zip(anchors, targets):
                k = t.get(BRANCH_KEY)
                if k is not None and self.branch_priors is not None:
                    self.priors = self.branch_priors[k]
                lab, box = super().assign_targets_to_anchors([a], [t])
                lab, box = lab[0], box[0]
                if k is not None and self.trident_ranges is not None and t["boxes"].numel():
                    lab[(lab > 0) & ~in_range(box, self.trident_ranges[k])] = -1.0
                labels.append(lab)
                matched.append(box)
        finally:
            if self.branch_priors is not None:
                self.priors = default
        return labels, matched


class _TridentRoIMixin:
    """The RoI head's own assignment per branch-image, then proposals outside the branch's
    range, and foreground proposals on a box outside it, become ignored (-1: never sampled)."""

    trident_ranges: list[Range] | None = None
    _branches: list | None = None

    def select_training_samples(self, proposals, targets):
        self._branches = [t.get(BRANCH_KEY) for t in targets] if targets is not None else None
        try:
            return super().select_training_samples(proposals, targets)
        finally:
            self._branches = None

    def assign_targets_to_proposals(
        self, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        matched, labels = super().assign_targets_to_proposals(proposals, gt_boxes, gt_labels)
        if self.trident_ranges is None or not self._branches:
            return matched, labels
        for props, gt, idx, lab, k in zip(proposals, gt_boxes, matched, labels, self._branches):
            if k is None:
                continue
            rng = self.trident_ranges[k]
            lab[~in_range(props, rng)] = -1
            if gt.numel():
                lab[(lab > 0) & ~in_range(gt[idx], rng)] = -1
        return matched, labels


class TridentRPN(_TridentRPNMixin, RegionProposalNetwork):
    """torchvision's RPN (iou, nwd) with the branch routing."""


class TridentRFLARPN(_TridentRPNMixin, RFLARegionProposalNetwork):
    """:class:`RFLARegionProposalNetwork` with the branch routing and per-branch priors."""


class TridentRoIHeads(_TridentRoIMixin, RoIHeads):
    """torchvision's RoI head (iou) with the branch routing."""


class TridentSimilarityRoIHeads(_TridentRoIMixin, SimilarityRoIHeads):
    """:class:`SimilarityRoIHeads` (nwd) with the branch routing."""


# the heads configure_matchers can build -> their trident class (same state, one more method)
RPN_CLASSES = {RegionProposalNetwork: TridentRPN, RFLARegionProposalNetwork: TridentRFLARPN}
ROI_CLASSES = {RoIHeads: TridentRoIHeads, SimilarityRoIHeads: TridentSimilarityRoIHeads}


# ------------------------------------------------------------------------------- detector
class TridentFasterRCNN(FasterRCNN):
    """``FasterRCNN`` whose backbone runs as branches: the RPN and RoI head see every image once
    per branch (targets tagged with their branch), and at test the branches' detections are
    merged by NMS, or one branch runs alone (``test_branch``). Set up by
    :func:`configure_trident`."""

    trident_ranges: Sequence[Range] = ()
    scale_aware: bool = True
    test_branch: int = -1

    def test_branches(self) -> list[int]:
        """The branches a forward runs: all in training or with ``test_branch`` -1."""
        if self.training or self.test_branch < 0:
            return list(range(self.backbone.num_branches))
        return [self.test_branch]

    def forward(self, images: list[Tensor], targets: list[dict[str, Tensor]] | None = None):
        if self.training:
            if targets is None:
                raise ValueError("targets should not be None in training mode")
            for t in targets:
                boxes = t["boxes"]
                if not isinstance(boxes, Tensor) or boxes.ndim != 2 or boxes.shape[-1] != 4:
                    raise ValueError(f"target boxes must be a [N, 4] tensor, got {boxes!r:.80}")
        original_sizes = [(int(img.shape[-2]), int(img.shape[-1])) for img in images]
        images, targets = self.transform(images, targets)
        if targets is not None:
            for i, t in enumerate(targets):
                bad = (t["boxes"][:, 2:] <= t["boxes"][:, :2]).any(dim=1)
                if bad.any():
                    box = t["boxes"][torch.where(bad)[0][0]].tolist()
                    raise ValueError(
                        "All bounding boxes should have positive height and width. "
                        f"Found invalid box {box} for target at index {i}."
                    )
        branches = self.test_branches()
        features = self.backbone(images.tensors, branches)
        # the anchor generator reads the padded size and the dtype of `tensors`, not its batch
        stacked = ImageList(images.tensors, list(images.image_sizes) * len(branches))
        routed = None
        if targets is not None:
            routed = [{**t, BRANCH_KEY: k} for k in branches for t in targets]
        proposals, proposal_losses = self.rpn(stacked, features, routed)
        detections, detector_losses = self.roi_heads(
            features, proposals, stacked.image_sizes, routed
        )
        if self.training:
            return {**detector_losses, **proposal_losses}
        if len(branches) > 1:
            detections = self.merge_branches(detections, branches, len(images.image_sizes))
        return self.transform.postprocess(detections, images.image_sizes, original_sizes)

    def merge_branches(
        self, detections: list[dict[str, Tensor]], branches: Sequence[int], n_images: int
    ) -> list[dict[str, Tensor]]:
        """Per image: every branch's detections (with scale-aware training only those in the
        branch's range), class-wise NMS, the top ``detections_per_img`` by score."""
        roi = self.roi_heads
        merged = []
        for i in range(n_images):
            parts = [detections[j * n_images + i] for j in range(len(branches))]
            if self.scale_aware:
                parts = [
                    {key: v[in_range(d["boxes"], self.trident_ranges[k])] for key, v in d.items()}
                    for d, k in zip(parts, branches)
                ]
            cat = {key: torch.cat([d[key] for d in parts]) for key in parts[0]}
            keep = batched_nms(cat["boxes"], cat["scores"], cat["labels"], roi.nms_thresh)
            keep = keep[: roi.detections_per_img]
            merged.append({key: v[keep] for key, v in cat.items()})
        return merged


def resolve_ranges(backbone: TridentBackbone, mcfg) -> list[Range]:
    """``model.trident.ranges`` as floats, or the default ranges from the branches' ERFs."""
    given = (mcfg.get("trident") or {}).get("ranges") or []
    if given:
        if len(given) != backbone.num_branches:
            raise ConfigError(
                f"model.trident.ranges has {len(given)} pairs for {backbone.num_branches} branches"
            )
        return [(float(lo), float(hi)) for lo, hi in given]
    rfs = branch_receptive_fields(backbone)
    return default_ranges([2 * r["erf_sigma"] for r in rfs])


def configure_trident(model: TridentFasterRCNN, mcfg) -> None:
    """Wire the branches into a built :class:`TridentFasterRCNN` (after the matchers): the RPN
    and RoI head get their trident class (the same modules and state, see ``RPN_CLASSES``),
    RFLA one prior per branch, and the model its ranges and test-time settings."""
    backbone = model.backbone
    if not isinstance(backbone, TridentBackbone):
        raise ConfigError("configure_trident needs a TridentBackbone (model.trident.enabled)")
    t = mcfg.get("trident") or {}
    _, _, test_branch = trident_settings(mcfg)
    for attr, table in (("rpn", RPN_CLASSES), ("roi_heads", ROI_CLASSES)):
        head = getattr(model, attr)
        if type(head) not in table:
            raise ConfigError(
                f"model.trident cannot route the boxes of {type(head).__name__} ({attr}): "
                f"it knows {', '.join(c.__name__ for c in table)}; add a trident class for it "
                "in detector/models/trident.py"
            )
        head.__class__ = table[type(head)]  # a subclass adding one method: state is kept
    model.trident_ranges = resolve_ranges(backbone, mcfg)
    model.scale_aware = bool(t.get("scale_aware", True))
    model.test_branch = test_branch
    routing = model.trident_ranges if model.scale_aware else None
    model.rpn.trident_ranges = routing
    model.roi_heads.trident_ranges = routing
    if isinstance(model.rpn, RFLARegionProposalNetwork):
        fraction = float(mcfg["rpn"]["rfla"]["erf_fraction"])
        priors = []
        for k in range(backbone.num_branches):
            with backbone.only_branch(k):
                priors.append(rfla_priors(backbone, fraction))
        model.rpn.branch_priors = priors
        model.rpn.priors = priors[backbone.default_branch]


# ----------------------------------------------------------------------------------- report
def _bound(v: float) -> float | None:
    return None if math.isinf(v) else round(float(v), 2)


def describe_branches(model: TridentFasterRCNN) -> list[dict]:
    """Per branch, for ``model_info``: multiplier, rates, receptive field per stage and of the
    output map, ERF size, range (``null`` high = no bound), HDC verdict and gridding coverage
    (of the rates the HDC check sees, else the trident stage's)."""
    backbone = model.backbone
    rfs = branch_receptive_fields(backbone)
    out = []
    for k, (m, rates, verdict, rf) in enumerate(
        zip(backbone.multipliers, backbone.branch_rates, backbone.branch_hdc, rfs)
    ):
        grid_rates = hdc_rates(rates) or rates[backbone.trident_stage]
        cov = coverage(3, grid_rates)
        lo, hi = model.trident_ranges[k]
        out.append(
            {
                "branch": k,
                "multiplier": m,
                "rates": rates,
                "receptive_field": rf["stages"],
                "rf": rf["rf"],
                "jump": rf["jump"],
                "erf_size": round(2 * rf["erf_sigma"], 2),
                "range": [_bound(lo), _bound(hi)],
                "hdc": verdict.to_dict(),
                "gridding": {
                    "rates": grid_rates,
                    "receptive_field": cov.receptive_field,
                    "holes": cov.holes,
                    "used_fraction": round(cov.used_fraction, 4),
                },
            }
        )
    return out


def trident_summary(model: TridentFasterRCNN) -> dict:
    """The model-wide trident settings, for ``model_info``."""
    b = model.backbone
    return {
        "stage": b.trident_stage,
        "branch_rates": b.multipliers,
        "scale_aware": model.scale_aware,
        "test_branch": model.test_branch,
        "default_branch": b.default_branch,
    }
