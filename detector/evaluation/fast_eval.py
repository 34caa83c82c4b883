"""The fast evaluator: pycocotools' ``evaluate()`` + ``accumulate()`` for boxes, vectorised.

Matching is done once for the largest maxDets and every area range and IoU threshold
(:mod:`.matching`). Accumulation works on "events" only: a precision/recall curve changes only at
true positives, so for each (IoU, category, area, maxDets) cell it is enough to know, at every
true positive, how many true and false positives precede it. False positives are counted with one
cumulative sum per area range; the 101-point interpolated precision is then a max-reduction over
recall thresholds. All counts are integers, so the numbers are identical to pycocotools'.

The same tables accept per-image weights (how often each image was drawn), which makes each
bootstrap resample a cheap re-accumulation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from detector.utils.bins import SizeBin

from .coco_io import Detections, GroundTruth
from .matching import candidate_pairs, greedy_match

EPS = np.spacing(1)


def coco_iou_thrs() -> np.ndarray:
    return np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)


def coco_rec_thrs() -> np.ndarray:
    return np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)


@dataclass
class MatchTable:
    """Per-detection and per-GT facts needed to accumulate, in accumulation order.

    Detections are ordered by (category, -score, image, rank in image), the order in which
    pycocotools' ``accumulate`` sees them; only the top ``max(max_dets)`` per image and category
    are kept.
    """

    K: int
    n_images: int
    iou_thrs: np.ndarray
    rec_thrs: np.ndarray
    max_dets: tuple[int, ...]
    area_rngs: np.ndarray  # (A, 2)
    det_cat: np.ndarray
    det_img: np.ndarray
    det_rank: np.ndarray
    det_score: np.ndarray
    det_inside: np.ndarray  # (A, n) det area inside each range
    det_orig: np.ndarray  # index into the Detections arrays
    cat_start: np.ndarray  # (K + 1,) boundaries of each category in the order
    gt_cat: np.ndarray
    gt_img: np.ndarray
    gt_counted: np.ndarray  # (A, G) True for a GT that is not ignored in that range
    events: list[tuple[np.ndarray, np.ndarray, np.ndarray]]  # per area: (t, pos, is_tp) by (t,pos)
    match_gt: list[np.ndarray]  # per area: matched GT index of each event
    max_gt_per_image: int
    cache: dict = field(default_factory=dict, repr=False)

    @property
    def A(self) -> int:
        return len(self.area_rngs)

    @property
    def T(self) -> int:
        return len(self.iou_thrs)


def _score_rank(score: np.ndarray) -> tuple[np.ndarray, int]:
    """Dense rank of each score in descending order (equal scores share a rank)."""
    o = np.argsort(-score, kind="stable")
    s = score[o]
    dense = np.zeros(len(s), np.int64)
    if len(s) > 1:
        np.cumsum(s[1:] != s[:-1], out=dense[1:])
    out = np.empty(len(s), np.int64)
    out[o] = dense
    return out, int(dense[-1]) + 1 if len(s) else 1


def _stable_order(keys: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """Stable argsort by several non-negative integer keys (most significant first).

    Packs them into one int64 when that cannot overflow (much faster than ``np.lexsort``).
    """
    span = 1
    for _, size in keys:
        span *= max(int(size), 1)
    if span < 2**62:
        packed = np.zeros(len(keys[0][0]), np.int64)
        for values, size in keys:
            packed *= max(int(size), 1)
            packed += values
        return np.argsort(packed, kind="stable")
    return np.lexsort(tuple(v for v, _ in reversed(keys)))


def build_match_table(
    gt: GroundTruth,
    dets: Detections,
    bins: list[SizeBin],
    max_dets: tuple[int, ...],
    iou_thrs: np.ndarray,
) -> MatchTable:
    K, n_img = len(gt.cat_ids), len(gt.img_ids)
    max_det = int(max(max_dets))
    area_rngs = np.array([b.area_range for b in bins], dtype=np.float64)
    thrs = np.minimum(np.asarray(iou_thrs, np.float64), 1 - 1e-10)
    n = len(dets)

    # Detections in matching order: image, category, -score (stable on file order).
    srank, n_scores = _score_rank(dets.score)
    order = _stable_order([(dets.img, n_img), (dets.cat, K), (srank, n_scores)])
    key = dets.img[order] * max(K, 1) + dets.cat[order]
    first = np.ones(n, bool)
    first[1:] = key[1:] != key[:-1]
    rank = np.arange(n) - np.maximum.accumulate(np.where(first, np.arange(n), 0))
    keep = rank < max_det
    order, key, rank = order[keep], key[keep], rank[keep]
    box = dets.bbox[order]

    # GT grouped by image and category, file order inside a group.
    gorder = np.lexsort((np.arange(len(gt.img)), gt.cat, gt.img))
    gkey = gt.img[gorder] * max(K, 1) + gt.cat[gorder]
    g_box, g_area, g_crowd = gt.bbox[gorder], gt.area[gorder], gt.crowd[gorder]
    g_ignore = (
        g_crowd[None, :]
        | (g_area[None, :] < area_rngs[:, :1])
        | (g_area[None, :] > area_rngs[:, 1:])
    )

    pd, pg, piou = candidate_pairs(key, box, gkey, g_box, g_crowd, float(thrs.min()))
    m = greedy_match(pd, pg, piou, key, g_crowd, g_ignore, thrs)

    # Accumulation order: category, -score, image, rank.
    d_img, d_cat, d_score = dets.img[order], dets.cat[order], dets.score[order]
    # (for equal score, image and category, rank follows file order, as does a stable sort)
    acc = _stable_order([(d_cat, K), (srank[order], n_scores), (d_img, n_img)])
    pos_of = np.empty(len(acc), np.int64)
    pos_of[acc] = np.arange(len(acc))
    d_area = box[:, 2] * box[:, 3]
    inside = (d_area[None, :] >= area_rngs[:, :1]) & (d_area[None, :] <= area_rngs[:, 1:])

    events, match_gt = [], []
    for a in range(len(area_rngs)):
        sel = m.a == a
        t, p, g = m.t[sel], pos_of[m.det[sel]], m.gt[sel]
        o = np.lexsort((p, t))
        events.append((t[o], p[o], ~g_ignore[a, g[o]]))
        match_gt.append(gorder[g[o]])
    cat_sorted = d_cat[acc]
    cat_start = np.searchsorted(cat_sorted, np.arange(K + 1), side="left")
    per_img = np.bincount(gt.img, minlength=n_img) if len(gt.img) else np.zeros(n_img, np.int64)
    return MatchTable(
        K=K,
        n_images=n_img,
        iou_thrs=np.asarray(iou_thrs, np.float64),
        rec_thrs=coco_rec_thrs(),
        max_dets=tuple(int(x) for x in max_dets),
        area_rngs=area_rngs,
        det_cat=cat_sorted,
        det_img=d_img[acc],
        det_rank=rank[acc],
        det_score=d_score[acc],
        det_inside=inside[:, acc],
        det_orig=order[acc],
        cat_start=cat_start,
        gt_cat=gt.cat[gorder],
        gt_img=gt.img[gorder],
        gt_counted=~g_ignore,
        events=events,
        match_gt=match_gt,
        max_gt_per_image=int(per_img.max()) if len(per_img) else 0,
    )


def _seg_cumsum(values: np.ndarray, seg: np.ndarray) -> np.ndarray:
    """Cumulative sum restarting at each change of the (sorted) segment id."""
    c = np.cumsum(values)
    if len(c) == 0:
        return c
    first = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]])
    before = np.r_[0, c][first]
    lengths = np.diff(np.r_[first, len(c)])
    return c - np.repeat(before, lengths)


@dataclass
class Cell:
    """Static (weight-independent) event arrays of one (area range, maxDets) pair."""

    counted_idx: np.ndarray  # positions of detections that count as FP when unmatched
    p: np.ndarray  # event positions (matched detections), ordered by (t, category, position)
    tp: np.ndarray  # event is a true positive (matched a non-ignored GT)
    inn: np.ndarray  # event detection is inside the area range
    k: np.ndarray
    t: np.ndarray
    seg: np.ndarray  # t * K + k
    seg_first: np.ndarray
    seg_len: np.ndarray
    n_le: np.ndarray  # counted detections at positions <= p
    n_before: np.ndarray  # counted detections before the event's category starts
    counted_img: np.ndarray  # image of each counted detection (for weights)
    p_img: np.ndarray  # image of each event
    tp_idx: np.ndarray  # indices of the true-positive events


def cell_of(mt: MatchTable, a: int, mi: int) -> Cell:
    """The events of one (area range, maxDets) cell, built once per table and cached: the
    evaluator and the bootstrap both accumulate from it."""
    key = (a, mi)
    if key not in mt.cache:
        valid = mt.det_rank < mt.max_dets[mi]
        counted_idx = np.flatnonzero(mt.det_inside[a] & valid)
        ev_t, ev_p, ev_tp = mt.events[a]
        keep = valid[ev_p]
        t, p, tp = ev_t[keep], ev_p[keep], ev_tp[keep]
        k = mt.det_cat[p]
        seg = t * mt.K + k
        seg_first = np.flatnonzero(np.r_[True, seg[1:] != seg[:-1]]) if len(seg) else seg
        n_before_cat = np.searchsorted(counted_idx, mt.cat_start[:-1], side="left")
        mt.cache[key] = Cell(
            counted_idx=counted_idx,
            p=p,
            tp=tp,
            inn=mt.det_inside[a][p],
            k=k,
            t=t,
            seg=seg,
            seg_first=seg_first,
            seg_len=np.diff(np.r_[seg_first, len(seg)]),
            n_le=np.searchsorted(counted_idx, p, side="right"),
            n_before=n_before_cat[k],
            counted_img=mt.det_img[counted_idx],
            p_img=mt.det_img[p],
            tp_idx=np.flatnonzero(tp),
        )
    return mt.cache[key]


def _seg_cumsum_cell(values: np.ndarray, cell: Cell) -> np.ndarray:
    c = np.cumsum(values)
    if len(c) == 0:
        return c
    before = np.r_[0, c][cell.seg_first]
    return c - np.repeat(before, cell.seg_len)


def accumulate(
    mt: MatchTable,
    img_weights: np.ndarray | None = None,
    areas: list[int] | None = None,
    mdets: list[int] | None = None,
    compact: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """pycocotools' ``precision`` [T,R,K,A,M] and ``recall`` [T,K,A,M] (-1 where no GT).

    ``img_weights`` (integers, one per image) re-weights images, e.g. for a bootstrap resample.
    ``areas``/``mdets`` restrict the work to some area-range / maxDets indices (others stay -1,
    or, with ``compact=True``, are left out of the returned arrays).
    """
    T, R, K, A, M = mt.T, len(mt.rec_thrs), mt.K, mt.A, len(mt.max_dets)
    areas = list(range(A)) if areas is None else list(areas)
    mdets = list(range(M)) if mdets is None else list(mdets)
    if compact:  # only the selected cells, in the order given (cheaper for bootstraps)
        precision = np.empty((T, R, K, len(areas), len(mdets)))
        recall = np.empty((T, K, len(areas), len(mdets)))
    else:
        precision = -np.ones((T, R, K, A, M))
        recall = -np.ones((T, K, A, M))
    weighted = img_weights is not None
    if weighted:
        img_weights = np.asarray(img_weights)
        gt_w = img_weights[mt.gt_img]
    for ai, a in enumerate(areas):
        w_gt = mt.gt_counted[a] * gt_w if weighted else mt.gt_counted[a]
        npig = np.bincount(mt.gt_cat, weights=w_gt, minlength=K)[:K]
        has_gt = npig > 0
        for mj, mi in enumerate(mdets):
            cell = cell_of(mt, a, mi)
            ti = cell.tp_idx
            n_le, n_before = cell.n_le[ti], cell.n_before[ti]
            if weighted:
                cw = np.concatenate(([0], np.cumsum(img_weights[cell.counted_img])))
                cin = cw[n_le] - cw[n_before]
                w = img_weights[cell.p_img]
                c_tp = _seg_cumsum_cell(w * cell.tp, cell)[ti]
                c_in = _seg_cumsum_cell(w * cell.inn, cell)[ti]
            else:
                cin = n_le - n_before
                c_tp = _seg_cumsum_cell(cell.tp.astype(np.int64), cell)[ti]
                c_in = _seg_cumsum_cell(cell.inn.astype(np.int64), cell)[ti]
            # Only true positives move the curve; fp = counted so far - matched counted so far.
            k, seg = cell.k[ti], cell.seg[ti]
            tps = c_tp.astype(np.float64)
            fps = (cin - c_in).astype(np.float64)
            pr = tps / (fps + tps + EPS)
            with np.errstate(invalid="ignore", divide="ignore"):
                rc = tps / npig[k]  # npig 0 only in weighted cells that end up as -1
            best = np.zeros((T * K, R))
            last_rc = np.zeros(T * K)
            if len(seg):
                u = np.searchsorted(mt.rec_thrs, rc, side="right") - 1
                change = np.r_[True, (seg[1:] != seg[:-1]) | (u[1:] != u[:-1])]
                gs = np.flatnonzero(change)
                best[seg[gs], u[gs]] = np.maximum.reduceat(pr, gs)
                last = np.r_[seg[1:] != seg[:-1], True]
                last_rc[seg[last]] = rc[last]
            q = np.maximum.accumulate(best[:, ::-1], axis=1)[:, ::-1].reshape(T, K, R)
            q = q.transpose(0, 2, 1)
            q[:, :, ~has_gt] = -1
            precision[:, :, :, ai if compact else a, mj if compact else mi] = q
            rec = last_rc.reshape(T, K)
            rec[:, ~has_gt] = -1
            recall[:, :, ai if compact else a, mj if compact else mi] = rec
    return precision, recall


def gt_counts(mt: MatchTable) -> np.ndarray:
    """(K, A) number of non-ignored GT per category and area range."""
    return np.stack(
        [
            np.bincount(mt.gt_cat, weights=mt.gt_counted[a], minlength=mt.K)[: mt.K]
            for a in range(mt.A)
        ],
        axis=1,
    ).astype(np.int64)
