"""Vectorised greedy matching with pycocotools' exact rules.

pycocotools matches, per image and category, each detection (by descending score, stable) to
the unmatched GT with the highest IoU >= the threshold (ties go to the later GT), preferring
non-ignored GT over ignored ones; a crowd GT can absorb any number of detections. Here every
image/category group is processed at once: step ``s`` handles the ``s``-th candidate detection of
every group together, for all IoU thresholds and all area ranges in one array operation. Only
pairs with IoU >= the lowest threshold can ever match, so only those are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def pair_iou(db: np.ndarray, gb: np.ndarray, crowd: np.ndarray) -> np.ndarray:
    """IoU of row-aligned box pairs (xywh, float64), bit-identical to pycocotools' ``bbIou``.

    For a crowd GT the union is the detection's area (intersection over detection area).
    """
    dx, dy, dw, dh = db[:, 0], db[:, 1], db[:, 2], db[:, 3]
    gx, gy, gw, gh = gb[:, 0], gb[:, 1], gb[:, 2], gb[:, 3]
    w = np.minimum(dw + dx, gw + gx) - np.maximum(dx, gx)
    h = np.minimum(dh + dy, gh + gy) - np.maximum(dy, gy)
    inter = w * h
    da = dw * dh
    union = np.where(crowd, da, da + gw * gh - inter)
    ok = (w > 0) & (h > 0)
    out = np.zeros(len(db), np.float64)
    out[ok] = inter[ok] / union[ok]
    return out


def group_pairs(det_key: np.ndarray, gt_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All (det, gt) index pairs with equal keys; both key arrays must be sorted ascending.

    Pairs come out ordered by det index, then gt index.
    """
    lo = np.searchsorted(gt_key, det_key, side="left")
    hi = np.searchsorted(gt_key, det_key, side="right")
    cnt = hi - lo
    total = int(cnt.sum())
    if total == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    pd = np.repeat(np.arange(len(det_key)), cnt)
    start = np.cumsum(cnt) - cnt
    pg = np.arange(total) - np.repeat(start - lo, cnt)
    return pd, pg


def candidate_pairs(
    det_key, det_box, gt_key, gt_box, gt_crowd, min_iou: float, chunk: int = 4_000_000
):
    """Pairs in the same group whose IoU is >= ``min_iou`` (processed in bounded chunks)."""
    n = len(det_key)
    if n == 0 or len(gt_key) == 0:
        z = np.zeros(0, np.int64)
        return z, z, np.zeros(0)
    lo = np.searchsorted(gt_key, det_key, side="left")
    hi = np.searchsorted(gt_key, det_key, side="right")
    csum = np.cumsum(hi - lo)
    out_d, out_g, out_i = [], [], []
    start = 0
    while start < n:
        base = csum[start - 1] if start else 0
        stop = int(np.searchsorted(csum, base + chunk, side="right"))
        stop = max(stop, start + 1)
        pd, pg = group_pairs(det_key[start:stop], gt_key)
        pd += start
        iou = pair_iou(det_box[pd], gt_box[pg], gt_crowd[pg])
        keep = iou >= min_iou
        out_d.append(pd[keep])
        out_g.append(pg[keep])
        out_i.append(iou[keep])
        start = stop
    return np.concatenate(out_d), np.concatenate(out_g), np.concatenate(out_i)


@dataclass
class Matches:
    """Matched (threshold, area range, detection, gt) quadruples."""

    t: np.ndarray
    a: np.ndarray
    det: np.ndarray
    gt: np.ndarray


def greedy_match(
    pair_det: np.ndarray,
    pair_gt: np.ndarray,
    pair_iou: np.ndarray,
    det_group: np.ndarray,
    gt_crowd: np.ndarray,
    gt_ignore: np.ndarray,
    thrs: np.ndarray,
) -> Matches:
    """Greedy matching for every threshold and area range at once.

    ``pair_*`` hold candidate pairs (any order); detection indices must already follow the
    processing order (group, then descending score, stable), ``det_group`` gives each
    detection's group. ``gt_ignore`` is (A, G): the GT ignore flag per area range.
    ``thrs`` are the thresholds already capped at ``1 - 1e-10``.
    """
    T, A = len(thrs), gt_ignore.shape[0]
    if len(pair_det) == 0:
        z = np.zeros(0, np.int64)
        return Matches(z, z, z, z)
    # Dense rank of each candidate detection inside its group: the step it is processed at.
    cand = np.unique(pair_det)
    grp = det_group[cand]
    first = np.ones(len(cand), bool)
    first[1:] = grp[1:] != grp[:-1]
    gstart = np.maximum.accumulate(np.where(first, np.arange(len(cand)), 0))
    step_of_cand = np.arange(len(cand)) - gstart
    step = step_of_cand[np.searchsorted(cand, pair_det)]
    # Inside a step: by detection, then IoU, then GT file order (the last best GT wins ties).
    order = np.lexsort((pair_gt, pair_iou, pair_det, step))
    pd, pg, pi, ps = pair_det[order], pair_gt[order], pair_iou[order], step[order]
    bounds = np.flatnonzero(np.diff(ps)) + 1
    starts = np.concatenate(([0], bounds))
    ends = np.concatenate((bounds, [len(ps)]))
    matched = np.zeros((T, A, len(gt_crowd)), bool)
    not_ig = (~gt_ignore).astype(np.int64) + 1  # 2 for a real GT, 1 for an ignored one
    thr_col = thrs[:, None, None]
    out_t, out_a, out_d, out_g = [], [], [], []
    for s0, s1 in zip(starts, ends):
        d, g, iou = pd[s0:s1], pg[s0:s1], pi[s0:s1]
        P = s1 - s0
        seg = np.flatnonzero(np.r_[True, d[1:] != d[:-1]])
        ok = (iou[None, None, :] >= thr_col) & (~matched[:, :, g] | gt_crowd[g])
        comb = ok * (not_ig[:, g] * P)[None] + np.arange(P)
        best = np.maximum.reduceat(comb, seg, axis=2)
        ti, ai, si = np.nonzero(best >= P)
        if len(ti) == 0:
            continue
        chosen = g[best[ti, ai, si] % P]
        matched[ti, ai, chosen] = True
        out_t.append(ti)
        out_a.append(ai)
        out_d.append(d[seg[si]])
        out_g.append(chosen)
    if not out_t:
        z = np.zeros(0, np.int64)
        return Matches(z, z, z, z)
    return Matches(
        np.concatenate(out_t), np.concatenate(out_a), np.concatenate(out_d), np.concatenate(out_g)
    )
