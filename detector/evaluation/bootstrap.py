"""Paired image-level bootstrap confidence intervals for metric differences between runs.

Matching is done once per run; a resample draws images with replacement (the same draw for all
runs, hence *paired*) and re-accumulates with the draw counts as image weights. On val sets of
up to a few hundred images the resamples are accumulated in batches (one array operation for
many weight vectors), 2-4x faster than one at a time.

Intervals: ``percentile`` (the 2.5-97.5% range of the resampled values), ``basic`` (that range
reflected about the estimate) and ``bca`` (bias-corrected and accelerated, Efron 1987; the
acceleration comes from a jackknife over images, grouped when there are many). AP on a small
test set is biased upwards (the interpolated precision is a running maximum over a noisy
curve), and a resample, drawn from the test set, is biased upwards again from the estimate: the
percentile interval of one run's AP sits too high and misses the truth from above. The basic
interval turns that shift around; in a paired difference the bias cancels. Hence the defaults:
``basic`` for a run's value, ``percentile`` for differences, each the best-covering method in
``benchmarks/bench_bootstrap_coverage.py`` (docs/bootstrap_coverage.md).
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np

from .api import parse_max_dets, prepare, resolve_bins
from .coco_io import Detections, load_results
from .fast_eval import EPS, Cell, MatchTable, accumulate, build_match_table, cell_of, coco_iou_thrs
from .summary import IOU_OF_METRIC, iou_index, mean_valid

DEFAULT_KEYS = ("AP", "AP50", "AP75")
CI_METHODS = ("bca", "percentile", "basic")
DEFAULT_CI = "basic"  # a run's AP: percentile covered 77-88% of test sets, basic 89.5-95.5%
DEFAULT_DELTA_CI = "percentile"  # a paired difference: 87-95%, and neither other method beat it
JACKKNIFE_GROUPS = 200  # BCa's jackknife leaves out one of at most this many image groups
_BATCH_ELEMENTS = 262_144  # per-array budget of a batch: larger ones fall out of the cache
_MIN_BATCH = 8  # fewer rows than this per batch do not pay for the 2-D indexing
_BASIS_IMAGES = 256  # up to this many images, counts come from per-image count matrices ...
_BASIS_ELEMENTS = 1_000_000  # ... of at most this many elements (8 MB per cell and run)
_WEIGHT_ELEMENTS = 4_000_000  # resample weights are drawn this many (16 MB) at a time
_NORMAL = NormalDist()


def parse_metric_key(key: str, bin_names: list[str], max_dets: tuple[int, ...]):
    """``AP_small`` -> ("AP", "small", None); ``AR_tiny@100`` -> ("AR", "tiny", 100)."""
    base, _, md = key.partition("@")
    mdet = int(md) if md else None
    for metric in (*IOU_OF_METRIC, "AP", "AR"):
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
        f"unknown metric {key!r}: use AP, AP25, AP50, AP75, AP_<bin>, AR@<maxdets>, "
        "AR_<bin>@<maxdets> "
        f"with bins {bin_names} and maxDets {list(max_dets)}"
    )


# ------------------------------------------------------------------- batched accumulation


def _seg_cumsum_rows(values: np.ndarray, cell: Cell) -> np.ndarray:
    """Per-row cumulative sum restarting at each (IoU, category) segment of the cell."""
    c = np.cumsum(values, axis=1)
    if c.shape[1] == 0:
        return c
    before = np.concatenate([np.zeros((len(c), 1)), c], axis=1)[:, cell.seg_first]
    return c - np.repeat(before, cell.seg_len, axis=1)


def _gt_per_image(mt: MatchTable, a: int) -> np.ndarray:
    """(images, K) counted GT per image and category in area range ``a`` (cached)."""
    key = ("gt_per_image", a)
    if key not in mt.cache:
        m = np.zeros((mt.n_images, mt.K))
        np.add.at(m, (mt.gt_img, mt.gt_cat), mt.gt_counted[a])
        mt.cache[key] = m
    return mt.cache[key]


def _linear_parts(
    mt: MatchTable, W: np.ndarray, a: int, mi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True and false positives before each true-positive event (B, events) and GT per category
    (B, K), the parts of a curve that are linear in the image weights."""
    cell = cell_of(mt, a, mi)
    npig = W @ _gt_per_image(mt, a)
    ti = cell.tp_idx
    cw = np.zeros((len(W), len(cell.counted_idx) + 1))
    np.cumsum(W[:, cell.counted_img], axis=1, out=cw[:, 1:])
    cin = cw[:, cell.n_le[ti]] - cw[:, cell.n_before[ti]]
    w_ev = W[:, cell.p_img]
    tps = _seg_cumsum_rows(w_ev * cell.tp, cell)[:, ti]
    fps = cin - _seg_cumsum_rows(w_ev * cell.inn, cell)[:, ti]
    return tps, fps, npig


def batch_curves(
    mt: MatchTable, weights: np.ndarray, a: int, mi: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`accumulate` of one (area range, maxDets) cell for many weight vectors at once.

    ``weights`` is (B, images); returns interpolated precision (B, T, K, R), recall (B, T, K)
    and which categories have GT (B, K). Same arithmetic as :func:`accumulate`, row by row, so
    the values are identical to it; only categories with GT are meaningful. On a small test
    set the counts are one matrix product with per-image counts (computed once, cached): they
    are sums of integers, so the product is exact.
    """
    W = np.asarray(weights, np.float64)
    B, T, K, R = len(W), mt.T, mt.K, len(mt.rec_thrs)
    cell = cell_of(mt, a, mi)
    ti = cell.tp_idx
    if mt.n_images <= _BASIS_IMAGES and mt.n_images * (2 * len(ti) + K) <= _BASIS_ELEMENTS:
        key = ("per_image_counts", a, mi)
        if key not in mt.cache:
            mt.cache[key] = _linear_parts(mt, np.eye(mt.n_images), a, mi)
        tps, fps, npig = (W @ m for m in mt.cache[key])
    else:
        tps, fps, npig = _linear_parts(mt, W, a, mi)
    pr = tps / (fps + tps + EPS)
    k, seg = cell.k[ti], cell.seg[ti]
    with np.errstate(invalid="ignore", divide="ignore"):
        rc = tps / npig[:, k]  # npig 0 only in categories that count as without GT
    best = np.zeros(B * T * K * R)
    rec = np.zeros((B, T * K))
    if len(seg):
        # rows, then segments, then recall bins ascend along each row: groups are contiguous
        u = np.searchsorted(mt.rec_thrs, rc, side="right") - 1
        key = (np.arange(B)[:, None] * (T * K) + seg) * R + u
        flat = key.ravel()
        gs = np.flatnonzero(np.r_[True, flat[1:] != flat[:-1]])
        best[flat[gs]] = np.maximum.reduceat(pr.ravel(), gs)
        last = np.r_[seg[1:] != seg[:-1], True]
        rec[:, seg[last]] = rc[:, last]
    q = np.maximum.accumulate(best.reshape(B, T, K, R)[..., ::-1], axis=3)[..., ::-1]
    return q, rec.reshape(B, T, K), npig > 0


def _masked_mean(x: np.ndarray, valid: np.ndarray, per_cat: int) -> np.ndarray:
    """Mean over categories with GT of ``x`` (B, K, per_cat summed), NaN where none has GT."""
    n = valid.sum(1) * per_cat
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, (x * valid).sum(1) / n, np.nan)


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
            thr = IOU_OF_METRIC.get(metric)
            if thr is not None and iou_index(iou_thrs, thr) is None:
                raise ValueError(f"{metric} needs IoU threshold {thr} among {list(iou_thrs)}")

    def _cell_index(self, b: str, md: int | None) -> tuple[int, int]:
        """(area range, maxDets) indices of a parsed key; AP is taken at the largest maxDets."""
        m = len(self.max_dets) - 1 if md is None else self.max_dets.index(md)
        return self.bin_names.index(b), m

    def __call__(self, mt: MatchTable, weights=None) -> np.ndarray:
        prec, rec = accumulate(mt, weights, self.areas, self.mdets, compact=True)
        out = np.empty(len(self.keys))
        for i, (metric, b, md) in enumerate(self.parsed):
            a_full, m_full = self._cell_index(b, md)
            a, m = self.areas.index(a_full), self.mdets.index(m_full)
            if metric == "AR":
                v = mean_valid(rec[:, :, [a], [m]])
            else:
                s = prec
                if metric != "AP":
                    s = prec[[iou_index(self.iou_thrs, IOU_OF_METRIC[metric])]]
                v = mean_valid(s[:, :, :, [a], [m]])
            out[i] = np.nan if v is None else v
        return out

    def batch(self, mt: MatchTable, weights: np.ndarray) -> np.ndarray:
        """(B, keys) metric values for B weight vectors (rows of ``weights``), in chunks."""
        weights = np.asarray(weights)
        out = np.empty((len(weights), len(self.keys)))
        cells = {self._cell_index(b, md) for _, b, md in self.parsed}
        width = max(
            [mt.T * mt.K * len(mt.rec_thrs), mt.n_images]
            + [len(cell_of(mt, a, m).counted_idx) + len(cell_of(mt, a, m).p) for a, m in cells]
        )
        step = _BATCH_ELEMENTS // max(width, 1)
        if step < _MIN_BATCH:  # a large set: one accumulate() per row is faster
            for i, w in enumerate(weights):
                out[i] = self(mt, w)
            return out
        for s in range(0, len(weights), step):
            rows = slice(s, s + step)
            curves = {c: batch_curves(mt, weights[rows], *c) for c in cells}
            for i, (metric, b, md) in enumerate(self.parsed):
                q, rec, valid = curves[self._cell_index(b, md)]
                if metric == "AR":
                    out[rows, i] = _masked_mean(rec.sum(1), valid, mt.T)
                    continue
                if metric != "AP":
                    q = q[:, [iou_index(self.iou_thrs, IOU_OF_METRIC[metric])]]
                out[rows, i] = _masked_mean(q.sum((1, 3)), valid, q.shape[1] * q.shape[3])
        return out


# -------------------------------------------------------------------------------- intervals


def resample_weights(n_images: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, images) draw counts of ``n`` bootstrap resamples (images drawn with replacement)."""
    out = np.empty((n, n_images), np.int32)
    for i in range(n):
        out[i] = np.bincount(rng.integers(0, n_images, n_images), minlength=n_images)
    return out


def jackknife_weights(n_images: int, groups: int = JACKKNIFE_GROUPS, seed: int = 0) -> np.ndarray:
    """(G, images) weights that leave out one image (G = images) or, beyond ``groups`` images,
    one of ``groups`` random equal-sized groups of images: BCa's acceleration is as consistent
    from grouped deletions, and the cost stays at ``groups`` accumulations on any val set."""
    if n_images <= groups:
        return 1 - np.eye(n_images, dtype=np.int32)
    perm = np.random.default_rng([seed, 1]).permutation(n_images)
    w = np.ones((groups, n_images), np.int32)
    for g, idx in enumerate(np.array_split(perm, groups)):
        w[g, idx] = 0
    return w


def acceleration(jack: np.ndarray) -> float:
    """BCa's acceleration from jackknife values (Efron 1987, eq. 6.6); 0 when undefined."""
    j = jack[np.isfinite(jack)]
    if len(j) < 3:
        return 0.0
    u = j.mean() - j
    den = float((u**2).sum())
    return float((u**3).sum() / (6 * den**1.5)) if den > 0 else 0.0


def bca_levels(
    samples: np.ndarray, point: float, accel: float, level: float
) -> tuple[float, float]:
    """BCa's quantile levels: the percentile interval's, moved by the bias (``z0``, from the
    share of resamples below the estimate, ties counted half) and the acceleration."""
    tol = 1e-12 * max(1.0, abs(point))
    below = np.count_nonzero(samples < point - tol)
    ties = np.count_nonzero(np.abs(samples - point) <= tol)
    b = len(samples)
    p0 = min(max((below + 0.5 * ties) / b, 0.5 / b), 1 - 0.5 / b)
    z0 = _NORMAL.inv_cdf(p0)
    out = []
    for alpha in ((1 - level) / 2, (1 + level) / 2):
        z = z0 + _NORMAL.inv_cdf(alpha)
        den = 1 - accel * z
        out.append(_NORMAL.cdf(z0 + z / den) if den > 0 else float(alpha > 0.5))
    return out[0], out[1]


def interval(
    samples: np.ndarray,
    point: np.ndarray,
    jack: np.ndarray | None = None,
    level: float = 0.95,
    method: str = DEFAULT_CI,
    bounds: tuple[float, float] | None = None,
) -> np.ndarray:
    """(..., 2) CI ends from bootstrap ``samples`` (n, ...), the estimate ``point`` (...) and,
    for ``bca``, jackknife values ``jack`` (G, ...). NaN resamples (an empty bin) are dropped;
    the ends are NaN where nothing is left or the estimate is NaN. ``bounds`` clips the ends to
    the statistic's range (a reflected ``basic`` end can leave it; the truth cannot)."""
    if method not in CI_METHODS:
        raise ValueError(f"CI method {method!r}: use one of {list(CI_METHODS)}")
    if method == "bca" and jack is None:
        raise ValueError("the bca interval needs jackknife values")
    samples = np.asarray(samples, np.float64)
    point = np.asarray(point, np.float64)
    shape = point.shape
    p1 = point.reshape(-1)
    s2 = samples.reshape(len(samples), p1.size)
    j2 = None if jack is None else np.asarray(jack, np.float64).reshape(len(jack), p1.size)
    out = np.full((len(p1), 2), np.nan)
    lo_q, hi_q = (1 - level) / 2, (1 + level) / 2
    for c in range(len(p1)):
        s = s2[:, c][np.isfinite(s2[:, c])]
        if not len(s) or not np.isfinite(p1[c]):
            continue
        if method == "bca":
            lo_q, hi_q = bca_levels(s, float(p1[c]), acceleration(j2[:, c]), level)
        q = np.quantile(s, [lo_q, hi_q])
        out[c] = 2 * p1[c] - q[::-1] if method == "basic" else q
    if bounds is not None:
        out = np.clip(out, *bounds)
    return out.reshape(*shape, 2)


# ------------------------------------------------------------------------------ entry points


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
    method: str = DEFAULT_CI,
    delta_method: str = DEFAULT_DELTA_CI,
    jackknife_groups: int = JACKKNIFE_GROUPS,
) -> dict:
    """Point values and paired-bootstrap CIs for several runs on the same GT.

    Returns ``{"keys": [...], "values": (R, Kk), "samples": (n, R, Kk), "jackknife": (G, R, Kk)
    or None, "ci": (R, Kk, 2), "delta_ci": (R, Kk, 3)}``; ``ci`` is a ``method`` interval of
    each run's value, ``delta_ci[r]`` holds (delta, lo, hi) of run r minus run 0 with a
    ``delta_method`` interval. The jackknife (only computed for ``bca``) lets a caller build
    BCa intervals of other combinations of the runs (:func:`interval`).
    """
    for m in (method, delta_method):
        if m not in CI_METHODS:
            raise ValueError(f"CI method {m!r}: use one of {list(CI_METHODS)}")
    g, _ = prepare(gt, [])
    size_bins = resolve_bins(bins)
    mdets = parse_max_dets(max_dets)
    thrs = coco_iou_thrs() if iou_thrs is None else np.asarray(iou_thrs, np.float64)
    names = [b.name for b in size_bins]
    metrics = _Metrics(metric_keys, names, mdets, thrs)
    dets = [r if isinstance(r, Detections) else load_results(r, g) for r in runs]
    tables = [build_match_table(g, d, size_bins, mdets, thrs) for d in dets]
    values = np.stack([metrics(mt) for mt in tables])
    rng = np.random.default_rng(seed)
    samples = np.empty((n, len(tables), len(metrics.keys)))
    step = max(1, _WEIGHT_ELEMENTS // max(g.num_images, 1))
    for s in range(0, n, step):
        weights = resample_weights(g.num_images, min(step, n - s), rng)  # same draws as one go
        for r, mt in enumerate(tables):
            samples[s : s + len(weights), r] = metrics.batch(mt, weights)
    jack = None
    if "bca" in (method, delta_method):
        jw = jackknife_weights(g.num_images, jackknife_groups, seed)
        jack = np.stack([metrics.batch(mt, jw) for mt in tables], 1)
    with np.errstate(invalid="ignore"):
        ci = interval(samples, values, jack, level, method, bounds=(0.0, 1.0))
        diff_jack = None if jack is None else jack - jack[:, :1]
        delta = values - values[:1]
        d_ci = interval(samples - samples[:, :1], delta, diff_jack, level, delta_method, (-1, 1))
    return {
        "keys": metrics.keys,
        "values": values,
        "samples": samples,
        "jackknife": jack,
        "ci": ci,
        "delta_ci": np.concatenate([delta[..., None], d_ci], -1),
        "n": n,
        "seed": seed,
        "level": level,
        "method": method,
        "delta_method": delta_method,
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
