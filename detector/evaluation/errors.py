"""TIDE-style error analysis (Bolya et al., ECCV 2020) for every size bin.

Every detection that is a false positive at IoU 0.5 in a bin gets one error type, tested in
TIDE's order (foreground IoU ``fg`` = 0.5, background IoU ``bg`` = 0.1; crowd GT is left out):

1. **Loc**: its best same-class GT has ``bg <= IoU < fg``.
2. **Cls**: some GT of another class has ``IoU >= fg``.
3. **Dupe**: its best same-class GT has ``IoU >= fg`` (so a higher-scoring detection took it).
4. **Bkg**: every GT has ``IoU < bg``.
5. **Both**: a GT of another class has ``bg <= IoU < fg``.
Anything left is counted as ``Other``. A non-ignored GT of the bin that no true positive matched and
no Loc/Cls error points at is **Missed**.

Each error type is then fixed on its own and AP50 recomputed: Loc and Cls errors become true
positives for their GT (correct box or class) when that GT is still free, else they are removed
(TIDE's rule); Both, Dupe and Bkg errors are removed; Missed GT are removed from the ground truth.
The reported ``dAP`` is AP50(fixed) - AP50(base), in AP points of the [0, 1] scale.

**Bins.** A GT belongs to the bin of its ``area`` (others are ignored, as in COCO). A detection is
in the bin of the GT it matches; an unmatched detection is in the bin of its own box area. These
are exactly COCO's rules, so the base AP50 here equals the bin's AP50 at the largest maxDets.
"""

from __future__ import annotations

import numpy as np

from detector.utils.bins import SizeBin

from .coco_io import Detections, GroundTruth
from .fast_eval import EPS, _seg_cumsum, build_match_table, coco_rec_thrs
from .matching import candidate_pairs

ERROR_TYPES = ("Cls", "Loc", "Both", "Dupe", "Bkg", "Missed")


def _ap_from_flags(order, cat, tp, fp, npig, K, rec_thrs) -> float | None:
    """Mean over classes with GT of the 101-point AP of the flagged detections in ``order``."""
    counted = tp[order] | fp[order]
    idx = order[counted]
    c = cat[idx]
    ap_k = np.zeros(K)
    if len(idx):
        tpc = _seg_cumsum(tp[idx].astype(np.int64), c)
        fpc = _seg_cumsum(fp[idx].astype(np.int64), c)
        is_tp = tp[idx]
        c, tpc, fpc = c[is_tp], tpc[is_tp].astype(float), fpc[is_tp].astype(float)
        valid = npig[c] > 0
        c, tpc, fpc = c[valid], tpc[valid], fpc[valid]
        if len(c):
            pr = tpc / (fpc + tpc + EPS)
            rc = tpc / npig[c]
            u = np.searchsorted(rec_thrs, rc, side="right") - 1
            R = len(rec_thrs)
            best = np.zeros((K, R))
            gs = np.flatnonzero(np.r_[True, (c[1:] != c[:-1]) | (u[1:] != u[:-1])])
            best[c[gs], u[gs]] = np.maximum.reduceat(pr, gs)
            q = np.maximum.accumulate(best[:, ::-1], axis=1)[:, ::-1]
            ap_k = q.mean(axis=1)
    have = npig > 0
    return float(ap_k[have].mean()) if have.any() else None


def _best_pair(pd, pi, n):
    """For each detection, the index of its highest-IoU pair (or -1)."""
    out = np.full(n, -1, np.int64)
    if len(pd):
        o = np.lexsort((pi, pd))
        last = np.r_[pd[o][1:] != pd[o][:-1], True]
        out[pd[o][last]] = o[last]
    return out


def error_analysis(
    gt: GroundTruth,
    dets: Detections,
    bins: list[SizeBin],
    max_det: int = 100,
    fg: float = 0.5,
    bg: float = 0.1,
) -> dict[str, dict]:
    """Per bin: base AP50, count and dAP of each error type, and the dominant one."""
    mt = build_match_table(gt, dets, bins, (max_det,), np.array([fg]))
    K, n = mt.K, len(mt.det_cat)
    rec_thrs = coco_rec_thrs()
    order = np.arange(n)  # mt order is already (category, -score, image, rank)
    box = dets.bbox[mt.det_orig]

    # IoU of every detection with every non-crowd GT of its image (any class), IoU >= bg.
    dperm = np.argsort(mt.det_img, kind="stable")
    nc = np.flatnonzero(~gt.crowd)
    gperm = nc[np.argsort(gt.img[nc], kind="stable")]
    pd, pg, pi = candidate_pairs(
        mt.det_img[dperm], box[dperm], gt.img[gperm], gt.bbox[gperm], gt.crowd[gperm], bg
    )
    pd, pg = dperm[pd], gperm[pg]
    same = gt.cat[pg] == mt.det_cat[pd]
    b_same = _best_pair(pd[same], pi[same], n)
    b_oth = _best_pair(pd[~same], pi[~same], n)
    s_idx, o_idx = np.flatnonzero(same), np.flatnonzero(~same)
    cls_iou = np.where(b_same >= 0, pi[s_idx[np.maximum(b_same, 0)]] if len(s_idx) else 0, 0.0)
    cls_gt = np.where(b_same >= 0, pg[s_idx[np.maximum(b_same, 0)]] if len(s_idx) else -1, -1)
    oth_iou = np.where(b_oth >= 0, pi[o_idx[np.maximum(b_oth, 0)]] if len(o_idx) else 0, 0.0)
    oth_gt = np.where(b_oth >= 0, pg[o_idx[np.maximum(b_oth, 0)]] if len(o_idx) else -1, -1)

    # Error type of a false positive (independent of the bin); -1 = other.
    etype = np.full(n, -1)
    rules = [
        ("Loc", (cls_iou >= bg) & (cls_iou < fg)),
        ("Cls", oth_iou >= fg),
        ("Dupe", cls_iou >= fg),
        ("Bkg", np.maximum(cls_iou, oth_iou) < bg),
        ("Both", (oth_iou >= bg) & (oth_iou < fg)),
    ]
    for name, cond in reversed(rules):
        etype[cond] = ERROR_TYPES.index(name)

    # GT index in the match table's GT arrays is gt-order; map original -> counted flags.
    g_counted = np.zeros((mt.A, len(gt.img)), bool)
    gorder = np.lexsort((np.arange(len(gt.img)), gt.cat, gt.img))
    g_counted[:, gorder] = mt.gt_counted

    out: dict[str, dict] = {}
    for a, b in enumerate(bins):
        npig = np.bincount(gt.cat, weights=g_counted[a], minlength=K)[:K]
        ev_t, ev_p, ev_tp = mt.events[a]
        tp = np.zeros(n, bool)
        tp[ev_p[ev_tp]] = True
        matched = np.zeros(n, bool)
        matched[ev_p] = True
        fp = mt.det_inside[a] & ~matched
        gt_taken = np.zeros(len(gt.img), bool)
        gt_taken[mt.match_gt[a][ev_tp]] = True
        base = _ap_from_flags(order, mt.det_cat, tp, fp, npig, K, rec_thrs)
        entry: dict = {"base_AP50": base, "gt_count": int(npig.sum())}
        if base is None:
            entry.update({"status": "no objects", "dAP": dict.fromkeys(ERROR_TYPES)})
            entry["count"] = dict.fromkeys(ERROR_TYPES, 0)
            entry["dominant"] = None
            out[b.name] = entry
            continue
        dap, count = {}, {}
        for ename in ERROR_TYPES[:5]:
            code = ERROR_TYPES.index(ename)
            sel = fp & (etype == code)
            count[ename] = int(sel.sum())
            tp2, fp2, cat2, order2 = tp.copy(), fp.copy(), mt.det_cat, order
            fp2[sel] = False
            if ename in ("Loc", "Cls"):
                target = cls_gt if ename == "Loc" else oth_gt
                cand = np.flatnonzero(sel)  # already in descending score order per class
                cand = cand[np.argsort(-mt.det_score[cand], kind="stable")]
                tg = target[cand]
                ok = g_counted[a, tg] & ~gt_taken[tg]
                cand, tg = cand[ok], tg[ok]
                _, first = np.unique(tg, return_index=True)
                tp2[cand[first]] = True
                if ename == "Cls":
                    cat2 = mt.det_cat.copy()
                    cat2[cand[first]] = gt.cat[tg[first]]
                    order2 = np.lexsort((mt.det_rank, mt.det_img, -mt.det_score, cat2))
            fixed = _ap_from_flags(order2, cat2, tp2, fp2, npig, K, rec_thrs)
            dap[ename] = (fixed - base) if fixed is not None else None
        # Missed: counted GT not matched and not pointed at by a Loc/Cls error.
        pointed = np.zeros(len(gt.img), bool)
        loc_sel = fp & (etype == ERROR_TYPES.index("Loc"))
        cls_sel = fp & (etype == ERROR_TYPES.index("Cls"))
        pointed[cls_gt[loc_sel]] = True
        pointed[oth_gt[cls_sel]] = True
        missed = g_counted[a] & ~gt_taken & ~pointed
        count["Missed"] = int(missed.sum())
        npig2 = npig - np.bincount(gt.cat[missed], minlength=K)[:K]
        fixed = _ap_from_flags(order, mt.det_cat, tp, fp, npig2, K, rec_thrs)
        dap["Missed"] = (fixed - base) if fixed is not None else None
        count["Other"] = int((fp & (etype == -1)).sum())
        entry.update({"status": "ok", "dAP": dap, "count": count})
        # the type whose fix gains most; none when no fix gains anything
        ranked = sorted((v, k) for k, v in dap.items() if v is not None and v > 0)
        entry["dominant"] = ranked[-1][1] if ranked else None
        out[b.name] = entry
    return out
