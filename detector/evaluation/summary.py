"""Summary numbers from pycocotools-layout precision/recall arrays.

Unlike ``COCOeval.summarize()`` this knows every bin by name, looks IoU thresholds up with a
tolerance (``np.arange`` thresholds are not exactly 0.75), takes AP at the *largest* maxDets
(pycocotools hard-codes ``maxDets[2]``), adds AP25 when the thresholds hold 0.25 (TinyPerson)
and reports an empty bin as ``None`` ("no objects") rather than a -1 that looks like a score.
Means are taken exactly as pycocotools does, so the standard numbers are bit-identical.
"""

from __future__ import annotations

import numpy as np

from detector.utils.bins import SizeBin

# AP at one IoU threshold each (AP25 only when the thresholds hold 0.25), after plain AP
IOU_METRICS = ("AP", "AP25", "AP50", "AP75")
# the IoU threshold of each single-threshold AP key
IOU_OF_METRIC = {"AP25": 0.25, "AP50": 0.5, "AP75": 0.75}


def mean_valid(s: np.ndarray) -> float | None:
    v = s[s > -1]
    return float(np.mean(v)) if v.size else None


def iou_index(iou_thrs: np.ndarray, thr: float) -> int | None:
    hit = np.flatnonzero(np.abs(np.asarray(iou_thrs) - thr) < 1e-9)
    return int(hit[0]) if hit.size else None


def bin_key(metric: str, bin_name: str, max_det: int | None = None) -> str:
    """``AP``/``AP_small``/``AR@100``/``AR_small@100`` naming."""
    name = metric if bin_name == "all" else f"{metric}_{bin_name}"
    return name if max_det is None else f"{name}@{max_det}"


def thr_label(t: float) -> str:
    return f"{t:.2f}".rstrip("0").rstrip(".") if t < 1 else "1"


def bin_metrics(
    precision: np.ndarray,
    recall: np.ndarray,
    iou_thrs: np.ndarray,
    max_dets: tuple[int, ...],
    a: int,
    gt_count: int,
) -> dict:
    """Every number for one area range (index ``a``)."""
    m_last = len(max_dets) - 1
    out: dict = {"gt_count": int(gt_count)}
    empty = gt_count == 0
    out["status"] = "no objects" if empty else "ok"

    def ap(t: int | None = None, m: int = m_last):
        if empty:
            return None
        s = precision if t is None else precision[[t]]
        return mean_valid(s[:, :, :, [a], [m]])

    def ar(t: int | None = None, m: int = m_last):
        if empty:
            return None
        s = recall if t is None else recall[[t]]
        return mean_valid(s[:, :, [a], [m]])

    out["AP"] = ap()
    for label, thr in IOU_OF_METRIC.items():
        t = iou_index(iou_thrs, thr)
        if label == "AP25" and t is None:
            continue  # only where asked for (TinyPerson): COCO's keys stay exactly as they are
        out[label] = ap(t) if t is not None else None
    out["AP_at_iou"] = {thr_label(t): ap(i) for i, t in enumerate(iou_thrs)}
    out["AR"] = {str(m): ar(None, mi) for mi, m in enumerate(max_dets)}
    out["recall_at_iou"] = {thr_label(t): ar(i) for i, t in enumerate(iou_thrs)}
    return out


def per_class_ap(precision: np.ndarray, a: int) -> list[float | None]:
    return [mean_valid(precision[:, :, k, a, -1]) for k in range(precision.shape[2])]


def flat_summary(per_bin: dict[str, dict], max_dets: tuple[int, ...]) -> dict[str, float | None]:
    """The flat ``AP``, ``AP_small``, ``AR@100``, ``AR_small@100`` ... dict."""
    out: dict[str, float | None] = {}
    for name, m in per_bin.items():
        for metric in IOU_METRICS:
            if metric in m:
                out[bin_key(metric, name)] = m[metric]
    for name, m in per_bin.items():
        for md in max_dets:
            out[bin_key("AR", name, md)] = m["AR"][str(md)]
    return out


def coco_stats(summary: dict, bins: list[SizeBin]) -> list[float]:
    """The 12 numbers of ``COCOeval.stats`` (None -> -1), for bins='coco' and maxDets 1,10,100."""
    keys = ["AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large", "AR@1", "AR@10", "AR@100"]
    keys += ["AR_small@100", "AR_medium@100", "AR_large@100"]
    return [-1.0 if summary.get(k) is None else summary[k] for k in keys]
