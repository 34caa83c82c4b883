"""Paired image-level bootstrap confidence intervals for metric differences between runs.

Matching is done once per run; a resample draws images with replacement (the same draw for all
runs, hence *paired*) and re-accumulates with the draw counts as image weights, which costs one
accumulation (tens of milliseconds on 5000 images) instead of a full evaluation.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .api import parse_max_dets, prepare, resolve_bins
from .coco_io import load_results
from .fast_eval import MatchTable, accumulate, build_match_table, coco_iou_thrs
from .summary import iou_index, mean_valid

DEFAULT_KEYS = ("AP", "AP50", "AP75")


def parse_metric_key(key: str, bin_names: list[str], max_dets: tuple[int, ...]):
    """``AP_small`` -> ("AP", "small", None); ``AR_tiny@100`` -> ("AR", "tiny", 100)."""
    base, _, md = key.partition("@")
    mdet = int(md) if md else None
    for metric in ("AP50", "AP75", "AP", "AR"):
        if base == metric:
            name = "all"
        elif base.startswith(metric + "_") and base[len(metric) + 1 :] in bin_names:
            name = base[len(metric) + 1 :]
        else:
            continue
        if metric == "AR" and mdet is None:
            mdet = max_dets[-1]
        if metric != "AR" and mdet is not None:
            break
        if mdet is not None and mdet not in max_dets:
            raise ValueError(f"metric {key!r}: maxDets {mdet} is not one of {list(max_dets)}")
        if name not in bin_names:
            break
        return metric, name, mdet
    raise ValueError(
        f"unknown metric {key!r}: use AP, AP50, AP75, AP_<bin>, AR@<maxdets>, AR_<bin>@<maxdets> "
        f"with bins {bin_names} and maxDets {list(max_dets)}"
    )


class _Metrics:
    """Computes a fixed list of metric keys from a match table, optionally image-weighted."""

    def __init__(self, keys, bin_names, max_dets, iou_thrs):
        self.keys = list(keys)
        self.parsed = [parse_metric_key(k, bin_names, max_dets) for k in self.keys]
        self.bin_names, self.max_dets, self.iou_thrs = bin_names, max_dets, iou_thrs
        self.areas = sorted({bin_names.index(b) for _, b, _ in self.parsed})
        md = {len(max_dets) - 1 if m is None else max_dets.index(m) for _, _, m in self.parsed}
        self.mdets = sorted(md)
        for metric, _, _ in self.parsed:
            if metric in ("AP50", "AP75"):
                thr = 0.5 if metric == "AP50" else 0.75
                if iou_index(iou_thrs, thr) is None:
                    raise ValueError(f"{metric} needs IoU threshold {thr} among {list(iou_thrs)}")

    def __call__(self, mt: MatchTable, weights=None) -> np.ndarray:
        prec, rec = accumulate(mt, weights, self.areas, self.mdets, compact=True)
        out = np.empty(len(self.keys))
        for i, (metric, b, md) in enumerate(self.parsed):
            a = self.areas.index(self.bin_names.index(b))
            m = self.mdets.index(len(self.max_dets) - 1 if md is None else self.max_dets.index(md))
            if metric == "AR":
                v = mean_valid(rec[:, :, [a], [m]])
            else:
                s = prec
                if metric != "AP":
                    s = prec[[iou_index(self.iou_thrs, 0.5 if metric == "AP50" else 0.75)]]
                v = mean_valid(s[:, :, :, [a], [m]])
            out[i] = np.nan if v is None else v
        return out


def bootstrap_runs(
    gt: Any,
    runs: list[Any],
    metric_keys=DEFAULT_KEYS,
    n: int = 1000,
    seed: int = 0,
    bins: Any = "coco",
    max_dets: Any = (1, 10, 100),
    iou_thrs: Any = None,
    level: float = 0.95,
) -> dict:
    """Point values and paired-bootstrap CIs for several runs on the same GT.

    Returns ``{"keys": [...], "values": (R, Kk), "samples": (n, R, Kk), "ci": (R, Kk, 2),
    "delta_ci": (R, Kk, 3)}``; ``delta_ci[r]`` holds (delta, lo, hi) of run r minus run 0.
    """
    g, _ = prepare(gt, [])
    size_bins = resolve_bins(bins)
    mdets = parse_max_dets(max_dets)
    thrs = coco_iou_thrs() if iou_thrs is None else np.asarray(iou_thrs, np.float64)
    names = [b.name for b in size_bins]
    metrics = _Metrics(metric_keys, names, mdets, thrs)
    tables = [build_match_table(g, load_results(r, g), size_bins, mdets, thrs) for r in runs]
    values = np.stack([metrics(mt) for mt in tables])
    rng = np.random.default_rng(seed)
    n_img = g.num_images
    samples = np.empty((n, len(runs), len(metrics.keys)))
    for i in range(n):
        w = np.bincount(rng.integers(0, n_img, n_img), minlength=n_img)
        for r, mt in enumerate(tables):
            samples[i, r] = metrics(mt, w)
    lo_q, hi_q = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    with np.errstate(invalid="ignore"):
        ci = np.stack(
            [np.nanpercentile(samples, lo_q, axis=0), np.nanpercentile(samples, hi_q, axis=0)], -1
        )
        diff = samples - samples[:, :1]
        delta_ci = np.stack(
            [
                values - values[:1],
                np.nanpercentile(diff, lo_q, axis=0),
                np.nanpercentile(diff, hi_q, axis=0),
            ],
            -1,
        )
    return {
        "keys": metrics.keys,
        "values": values,
        "samples": samples,
        "ci": ci,
        "delta_ci": delta_ci,
        "n": n,
        "seed": seed,
        "level": level,
        "bins": names,
    }


def paired_bootstrap(
    gt: Any,
    results_a: Any,
    results_b: Any,
    metric_keys=DEFAULT_KEYS,
    n: int = 1000,
    seed: int = 0,
    **kwargs,
) -> dict[str, tuple[float, float, float]]:
    """``{metric: (delta, lo, hi)}`` for B minus A with a paired 95% bootstrap CI."""
    out = bootstrap_runs(gt, [results_a, results_b], metric_keys, n=n, seed=seed, **kwargs)
    return {k: tuple(float(x) for x in out["delta_ci"][1, i]) for i, k in enumerate(out["keys"])}
