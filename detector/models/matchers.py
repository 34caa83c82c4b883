"""Label assignment for tiny objects: NWD and RFLA in torchvision's Faster R-CNN.

``model.rpn.matcher`` picks how anchors become RPN positives, ``model.roi.matcher`` how
proposals become foreground (docs/matchers.md):

* ``iou``: torchvision's own ``box_iou`` + ``Matcher``; :func:`configure_matchers` leaves the
  modules ``FasterRCNN`` built untouched, so training is bit-identical to before.
* ``nwd`` (Wang et al. 2021, "A Normalized Gaussian Wasserstein Distance for Tiny Object
  Detection"): each box is the Gaussian N((cx, cy), diag(w^2/4, h^2/4)); the match quality is
  ``exp(-W2 / C)`` (:func:`box_nwd`) instead of IoU, with its own thresholds, through the same
  torchvision ``Matcher``. RPN: its ``box_similarity`` and ``proposal_matcher`` attributes are
  swapped (torchvision's ``assign_targets_to_anchors`` calls both). RoI: torchvision's
  ``RoIHeads.assign_targets_to_proposals`` calls ``box_iou`` directly, so
  :class:`SimilarityRoIHeads` is the one-method subclass that calls ``self.box_similarity``.
* ``rfla`` (Xu et al. 2022, "RFLA: Gaussian Receptive Field based Label Assignment for Tiny
  Object Detection"): every feature point has a Gaussian receptive-field prior, centred on it,
  whose side is ``erf_fraction`` x the theoretical RF of its map, walked on the model at build
  time (:func:`~detector.models.receptive_field.feature_receptive_fields`). Boxes take points
  by a KL-divergence receptive-field distance, ranked (:func:`rfla_assign`).
  :class:`RFLARegionProposalNetwork` overrides ``assign_targets_to_anchors`` only; all anchors
  of a point share its prior, and regression targets stay relative to the anchors.

:func:`match_anchors` is the one entry point to the RPN's matching, used by training (through
the RPN) and by :func:`~detector.models.anchor_coverage.anchor_coverage`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

from detector.config.defaults import CHOICES
from detector.config.loader import ConfigError
from detector.utils.suggest import suggest

from .receptive_field import feature_receptive_fields

# the allowed values live once, in the config schema (checked at load; here again for configs
# built in code)
RPN_MATCHERS = CHOICES["model.rpn.matcher"]
ROI_MATCHERS = CHOICES["model.roi.matcher"]
# RFLA (HieAssigner): a point that is not a positive but whose best RFD score reaches this is
# ignored rather than a negative (it fits some box too well to be called background).
RFLA_IGNORE_SCORE = 0.8
IGNORE = det_utils.Matcher.BETWEEN_THRESHOLDS  # -2: neither positive nor negative
NEGATIVE = det_utils.Matcher.BELOW_LOW_THRESHOLD  # -1


def _at_least_f32(x: Tensor) -> Tensor:
    """``x`` in float32 unless it is float64: under AMP the anchors come in fp16/bf16 (the
    feature maps' dtype), too coarse for squared pixel distances."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


# ----------------------------------------------------------------------------------------- NWD
def box_nwd(boxes1: Tensor, boxes2: Tensor, constant: float = 12.8) -> Tensor:
    """Normalized Gaussian Wasserstein distance of every pair of (x1, y1, x2, y2) boxes: [N, M].

    A box is N((cx, cy), diag(w^2 / 4, h^2 / 4)); for such Gaussians the squared 2-Wasserstein
    distance is ``||(cx1, cy1, w1/2, h1/2) - (cx2, cy2, w2/2, h2/2)||^2`` and
    ``NWD = exp(-sqrt(W2^2) / constant)``. Unlike IoU it does not fall to 0 when two small boxes
    stop overlapping, and a few pixels of offset cost a small box no more than a large one.
    """
    boxes1, boxes2 = _at_least_f32(boxes1), _at_least_f32(boxes2)
    g1 = torch.cat([(boxes1[:, :2] + boxes1[:, 2:]) / 2, (boxes1[:, 2:] - boxes1[:, :2]) / 2], 1)
    g2 = torch.cat([(boxes2[:, :2] + boxes2[:, 2:]) / 2, (boxes2[:, 2:] - boxes2[:, :2]) / 2], 1)
    w2 = ((g1[:, None, :] - g2[None, :, :]) ** 2).sum(-1)
    return torch.exp(-torch.sqrt(w2) / constant)


class NWDSimilarity:
    """``box_similarity`` for torchvision's RPN / :class:`SimilarityRoIHeads`: :func:`box_nwd`
    with a fixed ``constant`` (a class rather than a lambda so the model stays picklable)."""

    def __init__(self, constant: float = 12.8) -> None:
        if not constant > 0:
            raise ConfigError(f"the NWD constant must be > 0, got {constant!r}")
        self.constant = float(constant)

    def __call__(self, boxes1: Tensor, boxes2: Tensor) -> Tensor:
        return box_nwd(boxes1, boxes2, self.constant)

    def __repr__(self) -> str:
        return f"NWDSimilarity(constant={self.constant:g})"


class SimilarityRoIHeads(RoIHeads):
    """torchvision's ``RoIHeads`` whose proposal matching uses ``self.box_similarity``.

    torchvision's ``assign_targets_to_proposals`` calls ``box_ops.box_iou`` itself (a
    TorchScript workaround), so setting the attribute alone would be silently ignored. The
    rest (sampling, losses, post-processing) is inherited.
    """

    def assign_targets_to_proposals(
        self, proposals: list[Tensor], gt_boxes: list[Tensor], gt_labels: list[Tensor]
    ) -> tuple[list[Tensor], list[Tensor]]:
        matched_idxs, labels = [], []
        for props, gt, gt_lab in zip(proposals, gt_boxes, gt_labels):
            if gt.numel() == 0:  # background image: every proposal is background
                idx = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
                lab = torch.zeros(props.shape[0], dtype=torch.int64, device=props.device)
            else:
                m = self.proposal_matcher(self.box_similarity(gt, props))
                idx = m.clamp(min=0)
                lab = gt_lab[idx].to(dtype=torch.int64)
                lab[m == self.proposal_matcher.BELOW_LOW_THRESHOLD] = 0
                lab[m == self.proposal_matcher.BETWEEN_THRESHOLDS] = -1  # the sampler skips -1
            matched_idxs.append(idx)
            labels.append(lab)
        return matched_idxs, labels


# ---------------------------------------------------------------------------------------- RFLA
def rfd_score(gt_boxes: Tensor, centers: Tensor, sizes: Tensor) -> Tensor:
    """RFLA's receptive-field distance as a score in (0, 1]: ``1 / (1 + KL)``, [G, P].

    The prior of point ``p`` is N(centers[p], (sizes[p] / 2)^2 I) (a square box of side
    ``sizes[p]``, read as a Gaussian like a box), a box N((cx, cy), diag(w^2/4, h^2/4)), and
    ``KL = KL(prior || box)`` as in mmdet-rfla's ``'kl'`` metric: the box's covariance scales
    the distances, so a prior much larger or smaller than the box, or off its centre, scores low.
    """
    cxy = (gt_boxes[:, :2] + gt_boxes[:, 2:]) / 2
    wh = gt_boxes[:, 2:] - gt_boxes[:, :2]  # torchvision guarantees w, h > 0 in training
    var_g = wh[:, None, :] ** 2 / 4  # [G, 1, 2]
    var_p = (sizes[None, :, None] ** 2 / 4).expand(1, -1, 2)  # [1, P, 2]
    d2 = (cxy[:, None, :] - centers[None, :, :]) ** 2  # [G, P, 2]
    kl = 0.5 * (var_p / var_g + d2 / var_g + torch.log(var_g / var_p) - 1).sum(-1)
    return 1 / (1 + kl)


def _rank_positives(score: Tensor, k: int) -> Tensor:
    """[G, P] bool: each box's top-``k`` points, ties included (every point whose score equals
    one of the ``k`` best is taken, as HieAssigner does)."""
    k = min(k, score.shape[1])
    kth = score.topk(k, dim=1).values[:, -1:]
    return score >= kth


def _claim(pos: Tensor, score: Tensor) -> Tensor:
    """Per point, the box among those that took it with the highest score (-1: none)."""
    masked = torch.where(pos, score, torch.full_like(score, -1.0))
    best, idx = masked.max(dim=0)
    return torch.where(best >= 0, idx, torch.full_like(idx, -1))


def rfla_assign(
    gt_boxes: Tensor,
    centers: Tensor,
    sizes: Tensor,
    topk: Sequence[int] = (3, 1),
    ratio: float = 0.9,
    ignore_score: float = RFLA_IGNORE_SCORE,
) -> Tensor:
    """RFLA's hierarchical label assignment of ``G`` boxes to ``P`` points: [P] int64, a box
    index for a positive, -1 (``NEGATIVE``) or -2 (``IGNORE``), torchvision's codes.

    1. every box takes its ``topk[0]`` points by :func:`rfd_score` (ties included);
    2. every box takes its ``topk[1]`` points again with each prior shrunk by ``ratio``; a point
       already positive keeps its first-pass box (this pass mainly moves boxes across levels:
       on one map all priors shrink alike and the ranking rarely changes);
    3. any other point is ignored if its best (second-pass) score reaches ``ignore_score``,
       else it is a negative.

    A point two boxes take goes to the one it scores higher with (HieAssigner: the later box).
    """
    matched = torch.full((centers.shape[0],), NEGATIVE, dtype=torch.int64, device=centers.device)
    if gt_boxes.numel() == 0 or centers.numel() == 0:
        return matched
    score = rfd_score(gt_boxes, centers, sizes)
    passes = [(score, _rank_positives(score, topk[0]))]
    last = score
    if len(topk) > 1:
        last = rfd_score(gt_boxes, centers, sizes * ratio)
        passes.append((last, _rank_positives(last, topk[1])))
    matched[last.max(dim=0).values >= ignore_score] = IGNORE
    for s, pos in reversed(passes):  # the first pass is written last: it wins
        claim = _claim(pos, s)
        matched = torch.where(claim >= 0, claim, matched)
    return matched


def _aligned_iou(a: Tensor, b: Tensor) -> Tensor:
    """IoU of boxes ``a`` and ``b`` element by element (broadcast over leading dims)."""
    lt = torch.maximum(a[..., :2], b[..., :2])
    rb = torch.minimum(a[..., 2:], b[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = (a[..., 2:] - a[..., :2]).prod(-1) + (b[..., 2:] - b[..., :2]).prod(-1)
    return inter / (area - inter)


def rfla_priors(backbone, erf_fraction: float) -> dict[str, dict]:
    """Per returned feature map: ``{trf, stride, size, path}`` with ``size = erf_fraction x
    trf`` the side (px) of the square prior box, i.e. its Gaussian has sigma = size / 2."""
    levels = feature_receptive_fields(backbone)
    return {
        name: {
            "trf": lv["rf"],
            "stride": lv["stride"],
            "size": erf_fraction * lv["rf"],
            "path": lv["path"],
        }
        for name, lv in levels.items()
    }


class RFLARegionProposalNetwork(RegionProposalNetwork):
    """torchvision's RPN with RFLA's assignment; everything else (head, anchors, proposals,
    sampling, losses) is inherited.

    ``priors`` maps each feature-map name to its prior (:func:`rfla_priors`). The assignment
    needs to know which feature map (and so which prior) each anchor belongs to, which
    torchvision's ``assign_targets_to_anchors(anchors, targets)`` does not receive, so
    ``forward`` notes the maps' names and grid sizes first.
    """

    def __init__(
        self,
        *args,
        priors: Mapping[str, Mapping],
        topk: Sequence[int] = (3, 1),
        ratio: float = 0.9,
        ignore_score: float = RFLA_IGNORE_SCORE,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.priors = {name: dict(p) for name, p in priors.items()}
        self.topk = [int(k) for k in topk]
        self.ratio = float(ratio)
        self.ignore_score = float(ignore_score)
        self._levels: list[tuple[str, int, int]] = []

    def forward(self, images, features: dict[str, Tensor], targets=None):
        self._levels = [(name, f.shape[-2], f.shape[-1]) for name, f in features.items()]
        return super().forward(images, features, targets)

    def match(
        self, anchors: Tensor, gt_boxes: Tensor, levels: list[tuple[str, int, int]]
    ) -> Tensor:
        """[A] matched box index / -1 / -2 of one image's ``anchors`` (torchvision's layout:
        level after level, each point's anchors contiguous), given ``levels`` = the maps'
        ``(name, height, width)`` in the order the anchors were made.

        :func:`rfla_assign` picks the points; a positive point's anchors all share its prior,
        and the one that fits the box best (highest IoU, ties included) becomes the positive,
        so the regression starts from an anchor of about the box's shape; the point's other
        anchors are ignored. Negative and ignored points pass their label to all their anchors.
        """
        anchors, gt_boxes = _at_least_f32(anchors), _at_least_f32(gt_boxes)
        per_point = self.anchor_generator.num_anchors_per_location()
        if len(levels) != len(per_point):
            raise ValueError(f"{len(per_point)} anchor levels but {len(levels)} feature maps")
        grids, centers, sizes = [], [], []
        start = 0
        for (name, h, w), a in zip(levels, per_point):
            if name not in self.priors:
                raise KeyError(f"no RFLA prior for feature map {name!r}; have {list(self.priors)}")
            n = h * w
            grid = anchors[start : start + n * a].view(n, a, 4)
            centers.append((grid[:, 0, :2] + grid[:, 0, 2:]) / 2)  # every anchor shares it
            sizes.append(grid.new_full((n,), self.priors[name]["size"]))
            grids.append(grid)
            start += n * a
        if start != anchors.shape[0]:
            raise ValueError(f"{anchors.shape[0]} anchors but the maps {levels} make {start}")
        points = rfla_assign(
            gt_boxes, torch.cat(centers), torch.cat(sizes), self.topk, self.ratio, self.ignore_score
        )
        out, first = [], 0
        for grid in grids:
            n, a = grid.shape[:2]
            pt = points[first : first + n]
            first += n
            m = pt[:, None].expand(n, a).clone()
            pos = pt >= 0
            if pos.any():
                iou = _aligned_iou(grid[pos], gt_boxes[pt[pos]][:, None, :])  # [n_pos, a]
                best = iou >= iou.max(dim=1, keepdim=True).values
                m[pos] = torch.where(best, m[pos], torch.full_like(m[pos], IGNORE))
            out.append(m.reshape(-1))
        return torch.cat(out)

    def assign_targets_to_anchors(
        self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
    ) -> tuple[list[Tensor], list[Tensor]]:
        labels, matched_gt_boxes = [], []
        for anchors_per_image, t in zip(anchors, targets):
            gt = t["boxes"]
            n, device = anchors_per_image.shape[0], anchors_per_image.device
            if gt.numel() == 0:  # background image: every anchor is a negative (as torchvision)
                matched_gt_boxes.append(torch.zeros((n, 4), dtype=torch.float32, device=device))
                labels.append(torch.zeros((n,), dtype=torch.float32, device=device))
                continue
            m = self.match(anchors_per_image, gt, self._levels)
            matched_gt_boxes.append(gt[m.clamp(min=0)])
            lab = (m >= 0).to(torch.float32)
            lab[m == IGNORE] = -1.0  # the sampler skips -1
            labels.append(lab)
        return labels, matched_gt_boxes


# ------------------------------------------------------------------------------------- wiring
def _choice(value, choices: Sequence[str], key: str) -> str:
    if value not in choices:
        raise ConfigError(
            f"{key} must be one of {', '.join(choices)}, got {value!r}"
            + suggest(value, choices, "valid matchers")
        )
    return value


def _thresholds(section, key: str) -> tuple[float, float]:
    fg, bg = float(section["fg_thresh"]), float(section["bg_thresh"])
    if not 0 <= bg <= fg <= 1:
        raise ConfigError(f"{key}: need 0 <= bg_thresh <= fg_thresh <= 1, got fg {fg:g}, bg {bg:g}")
    return fg, bg


def _rfla_settings(rcfg) -> tuple[list[int], float, float]:
    topk = rcfg["topk"]
    if (
        not isinstance(topk, (list, tuple))
        or not 1 <= len(topk) <= 2
        or any(isinstance(k, bool) or not isinstance(k, int) or k < 1 for k in topk)
    ):
        raise ConfigError(
            f"model.rpn.rfla.topk must be [k1] or [k1, k2] with positive ints (the points per "
            f"box of the first and the hierarchical second pass), got {topk!r}"
        )
    ratio, fraction = float(rcfg["ratio"]), float(rcfg["erf_fraction"])
    if not 0 < ratio <= 1:
        raise ConfigError(f"model.rpn.rfla.ratio must be in (0, 1], got {ratio:g}")
    if not fraction > 0:
        raise ConfigError(f"model.rpn.rfla.erf_fraction must be > 0, got {fraction:g}")
    return list(topk), ratio, fraction


def configure_matchers(model, mcfg) -> None:
    """Wire ``model.rpn.matcher`` and ``model.roi.matcher`` into a built ``FasterRCNN``.

    ``iou`` touches nothing. The replaced RPN / RoI heads reuse the built head, anchor
    generator, box head and predictor, so parameters, their initial values and the state-dict
    keys are those of the ``iou`` model (checkpoints load across matchers).
    """
    rpn_cfg, roi_cfg = mcfg["rpn"], mcfg["roi"]
    rpn_matcher = _choice(rpn_cfg.get("matcher", "iou"), RPN_MATCHERS, "model.rpn.matcher")
    roi_matcher = _choice(roi_cfg.get("matcher", "iou"), ROI_MATCHERS, "model.roi.matcher")
    if rpn_matcher == "nwd":
        fg, bg = _thresholds(rpn_cfg["nwd"], "model.rpn.nwd")
        model.rpn.box_similarity = NWDSimilarity(rpn_cfg["nwd"]["constant"])
        model.rpn.proposal_matcher = det_utils.Matcher(fg, bg, allow_low_quality_matches=True)
    elif rpn_matcher == "rfla":
        topk, ratio, fraction = _rfla_settings(rpn_cfg["rfla"])
        old = model.rpn
        model.rpn = RFLARegionProposalNetwork(
            old.anchor_generator,
            old.head,
            rpn_cfg["fg_iou_thresh"],
            rpn_cfg["bg_iou_thresh"],
            rpn_cfg["batch_size_per_image"],
            rpn_cfg["positive_fraction"],
            dict(old._pre_nms_top_n),
            dict(old._post_nms_top_n),
            rpn_cfg["nms_thresh"],
            rpn_cfg["score_thresh"],
            priors=rfla_priors(model.backbone, fraction),
            topk=topk,
            ratio=ratio,
        )
    if roi_matcher == "nwd":
        fg, bg = _thresholds(roi_cfg["nwd"], "model.roi.nwd")
        old = model.roi_heads
        model.roi_heads = SimilarityRoIHeads(
            old.box_roi_pool,
            old.box_head,
            old.box_predictor,
            fg,  # RoIHeads builds Matcher(fg, bg, allow_low_quality_matches=False) from these
            bg,
            roi_cfg["batch_size_per_image"],
            roi_cfg["positive_fraction"],
            None,  # bbox_reg_weights: torchvision's default (10, 10, 5, 5)
            old.score_thresh,
            old.nms_thresh,
            old.detections_per_img,
        )
        model.roi_heads.box_similarity = NWDSimilarity(roi_cfg["nwd"]["constant"])


def match_anchors(
    rpn: RegionProposalNetwork,
    anchors: Tensor,
    gt_boxes: Tensor,
    levels: list[tuple[str, int, int]],
) -> Tensor:
    """[A] matched box index / -1 (negative) / -2 (ignored) of one image's anchors, by the
    RPN's own matching: ``proposal_matcher(box_similarity(gt, anchors))`` (what torchvision's
    ``assign_targets_to_anchors`` runs: iou, nwd) or :meth:`RFLARegionProposalNetwork.match`.
    ``levels``: the maps' ``(name, height, width)``, in anchor order (RFLA needs them)."""
    if isinstance(rpn, RFLARegionProposalNetwork):
        return rpn.match(anchors, gt_boxes, levels)
    return rpn.proposal_matcher(rpn.box_similarity(gt_boxes, anchors))


def describe_matcher(rpn: RegionProposalNetwork) -> str:
    """One line saying how ``rpn`` picks its positives (for tables and logs)."""
    if isinstance(rpn, RFLARegionProposalNetwork):
        sizes = ", ".join(f"{n} {p['size']:g}" for n, p in rpn.priors.items())
        return (
            f"RPN matcher rfla: top-{rpn.topk} points by RFD (ratio {rpn.ratio:g}); "
            f"prior side px per map (erf_fraction x TRF): {sizes}"
        )
    m = rpn.proposal_matcher
    sim = rpn.box_similarity
    name = "NWD" if isinstance(sim, NWDSimilarity) else "IoU"
    extra = f" (C {sim.constant:g} px)" if isinstance(sim, NWDSimilarity) else ""
    low = ", plus each box's best anchor" if m.allow_low_quality_matches else ""
    return (
        f"RPN matcher {name.lower()}{extra}: positives at {name} >= {m.high_threshold:g}, "
        f"negatives < {m.low_threshold:g}{low}"
    )
