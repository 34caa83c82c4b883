"""Bootstrap intervals: known answers for BCa / percentile / basic, the batched resample
accumulation against the evaluator, and coverage of the default interval on generated data
(benchmarks/bench_bootstrap_coverage.py is the full study, docs/bootstrap_coverage.md)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from detector.evaluation import bootstrap as bs
from detector.evaluation.api import evaluate
from detector.evaluation.bootstrap import (
    DEFAULT_CI,
    DEFAULT_DELTA_CI,
    _Metrics,
    acceleration,
    bootstrap_runs,
    interval,
    jackknife_weights,
    resample_weights,
)
from detector.evaluation.coco_io import load_gt, load_results
from detector.evaluation.fast_eval import build_match_table, coco_iou_thrs
from detector.evaluation.synthetic import (
    DetectorModel,
    Scene,
    coverage_draws,
    make_dataset,
    make_population,
    population_truth,
)
from detector.utils.bins import ALL, get_bins

# ------------------------------------------------------------------ intervals, known answers


def _binomial_case(n: int = 40, k: int = 4, copies: int = 1_000_000):
    """The mean of a 0/1 sample with k ones: its bootstrap distribution is exactly
    Binomial(n, k/n) / n; it is materialised in proportion to the pmf (no sampling noise)."""
    p = k / n
    pmf = np.array([math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(n + 1)])
    samples = np.repeat(np.arange(n + 1) / n, np.round(pmf * copies).astype(int))
    x = np.r_[np.ones(k), np.zeros(n - k)]
    jack = (x.sum() - x) / (n - 1)  # leave-one-out means
    return samples, p, jack


def test_acceleration_of_a_mean_is_the_skewness_formula():
    """For a mean the jackknife acceleration is sum(d^3) / (6 sum(d^2)^1.5), d = x - mean;
    for a 0/1 sample that is (1 - 2p) / (6 sqrt(n p (1 - p)))."""
    _, p, jack = _binomial_case()
    assert acceleration(jack) == pytest.approx((1 - 2 * p) / (6 * math.sqrt(40 * p * (1 - p))))
    x = np.random.default_rng(0).exponential(size=30)
    d = x - x.mean()
    loo = (x.sum() - x) / 29
    assert acceleration(loo) == pytest.approx((d**3).sum() / (6 * (d**2).sum() ** 1.5))
    assert acceleration(np.full(5, 0.3)) == 0.0  # no spread: no acceleration
    assert acceleration(np.array([np.nan, 1.0])) == 0.0


def test_bca_percentile_basic_on_an_exact_bootstrap_distribution():
    """n = 40, k = 4: z0 = Phi^-1(P(B < 4) + P(B = 4) / 2) = 0.0654 and a = 0.0703 move the
    levels from (2.5%, 97.5%) to (5.41%, 99.24%), which fall on 1/40 and 9/40 of the
    Binomial(40, 0.1) (worked out by hand, far from the cdf's jumps); the percentile interval
    is (1/40, 8/40) and the basic one its reflection about 0.1: (0, 7/40)."""
    samples, p, jack = _binomial_case()
    lo_q, hi_q = bs.bca_levels(samples, p, acceleration(jack), 0.95)
    assert lo_q == pytest.approx(0.05408, abs=2e-5) and hi_q == pytest.approx(0.99239, abs=2e-5)
    assert interval(samples, p, jack, method="bca") == pytest.approx([1 / 40, 9 / 40])
    assert interval(samples, p, method="percentile") == pytest.approx([1 / 40, 8 / 40])
    assert interval(samples, p, method="basic") == pytest.approx([0.0, 7 / 40], abs=1e-12)


def test_bca_without_bias_or_acceleration_is_the_percentile_interval():
    samples = 0.5 + np.linspace(-1, 1, 1001) ** 3  # symmetric about the estimate 0.5
    flat = np.zeros(10)
    assert interval(samples, 0.5, flat, method="bca") == pytest.approx(
        interval(samples, 0.5, method="percentile"), abs=1e-12
    )
    # every resample below the estimate: the top of them (a finite z0), not NaN
    lo, hi = interval(np.linspace(0, 1, 100), 2.0, flat, method="bca")
    assert 0.95 <= lo <= hi <= 1


def test_interval_shapes_nans_and_errors():
    rng = np.random.default_rng(0)
    samples = rng.normal(size=(500, 3, 2))
    samples[:, 1, 1] = np.nan  # an empty bin in every resample
    samples[:10, 0, 0] = np.nan  # ... or in a few
    point = np.zeros((3, 2))
    point[2, 0] = np.nan
    jack = rng.normal(size=(20, 3, 2))
    for m in bs.CI_METHODS:
        ci = interval(samples, point, jack, method=m)
        assert ci.shape == (3, 2, 2)
        assert np.isnan(ci[1, 1]).all() and np.isnan(ci[2, 0]).all()
        assert (
            np.isfinite(ci[0, 0]).all()
            and (ci[..., 0] <= ci[..., 1])[np.isfinite(ci[..., 0])].all()
        )
    # a constant statistic (the same run twice) gives a zero-width interval at it
    assert interval(np.zeros(50), 0.0, np.zeros(5), method="bca").tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="CI method"):
        interval(samples, point, method="studentized")
    with pytest.raises(ValueError, match="jackknife"):
        interval(samples, point, None, method="bca")


def test_jackknife_weights():
    assert np.array_equal(jackknife_weights(5, 10), 1 - np.eye(5, dtype=int))
    w = jackknife_weights(1003, 100, seed=3)
    assert w.shape == (100, 1003)
    assert ((w == 0).sum(0) == 1).all()  # every image is left out exactly once
    assert set((w == 0).sum(1)) == {10, 11}  # equal-sized groups
    assert np.array_equal(w, jackknife_weights(1003, 100, seed=3))


# ------------------------------------------------------------- batched resample accumulation


@pytest.mark.parametrize("fast_path", [True, False])
def test_batched_metrics_equal_the_evaluator(monkeypatch, fast_path):
    """Every resample's metrics from the batched accumulation equal accumulate()'s, one weight
    vector at a time (crowd GT, ties, empty images, several bins and maxDets), on the
    per-image-count path and on the cumulative-sum path."""
    if not fast_path:
        monkeypatch.setattr(bs, "_BASIS_IMAGES", 0)
    monkeypatch.setattr(bs, "_BATCH_ELEMENTS", 50_000)  # several chunks of a few rows,
    monkeypatch.setattr(bs, "_MIN_BATCH", 1)  # batched even when that is slower
    gt, res = make_dataset(40, seed=2, n_cats=4, dets_per_image=40)
    g = load_gt(gt)
    d = load_results(res, g)
    bins = get_bins("coco")
    mt = build_match_table(g, d, bins, (1, 10, 100), coco_iou_thrs())
    keys = ["AP", "AP50", "AP75", "AP_small", "AP_large", "AR@100", "AR_small@10", "AR@1"]
    m = _Metrics(keys, [b.name for b in bins], (1, 10, 100), coco_iou_thrs())
    w = np.concatenate(
        [
            resample_weights(g.num_images, 25, np.random.default_rng(1)),
            jackknife_weights(g.num_images, 8, seed=0),
            np.ones((1, g.num_images), int),
        ]
    )
    loop = np.stack([m(mt, row) for row in w])
    assert np.allclose(m.batch(mt, w), loop, rtol=0, atol=1e-12, equal_nan=True)


def test_jackknife_values_are_evaluations_without_the_image():
    gt, res = make_dataset(12, seed=4, n_cats=3, dets_per_image=30)
    out = bootstrap_runs(gt, [res], ["AP", "AR@100"], n=20, method="bca")
    assert out["jackknife"].shape == (12, 1, 2)
    for i in (0, 7):
        drop = gt["images"][i]["id"]
        g2 = dict(gt, images=[im for im in gt["images"] if im["id"] != drop])
        g2["annotations"] = [a for a in gt["annotations"] if a["image_id"] != drop]
        r2 = [r for r in res if r["image_id"] != drop]
        s = evaluate(g2, r2, errors=False).summary
        assert out["jackknife"][i, 0] == pytest.approx([s["AP"], s["AR@100"]], abs=1e-12)


def test_resamples_are_the_draws_of_before(monkeypatch):
    """Drawn in chunks and accumulated in batches, the resamples are still the ones the
    per-resample loop drew from the same seed (so earlier reports' CIs are reproducible)."""
    monkeypatch.setattr(bs, "_WEIGHT_ELEMENTS", 7 * 25)  # 7 resamples per chunk
    gt, res = make_dataset(25, seed=3, n_cats=3, dets_per_image=30)
    out = bootstrap_runs(gt, [res], ["AP", "AP_small"], n=30, seed=5)
    g = load_gt(gt)
    bins = get_bins("coco")
    mt = build_match_table(g, load_results(res, g), bins, (1, 10, 100), coco_iou_thrs())
    m = _Metrics(["AP", "AP_small"], [b.name for b in bins], (1, 10, 100), coco_iou_thrs())
    rng = np.random.default_rng(5)
    old = [m(mt, np.bincount(rng.integers(0, 25, 25), minlength=25)) for _ in range(30)]
    assert np.allclose(out["samples"][:, 0], old, rtol=0, atol=1e-12, equal_nan=True)


def test_bootstrap_runs_methods_share_the_resamples():
    gt, res = make_dataset(30, seed=1, n_cats=3, dets_per_image=30)
    _, other = make_dataset(30, seed=9, n_cats=3, dets_per_image=30)
    runs = {m: bootstrap_runs(gt, [res, other], ["AP"], n=200, method=m) for m in bs.CI_METHODS}
    assert runs["percentile"]["jackknife"] is None and runs[DEFAULT_CI]["method"] == DEFAULT_CI
    s = runs["bca"]["samples"]
    assert np.array_equal(s, runs["percentile"]["samples"])  # same draws whatever the method
    pct = np.nanpercentile(s, [2.5, 97.5], axis=0)  # the pre-BCa definition
    assert np.allclose(runs["percentile"]["ci"], np.moveaxis(pct, 0, -1))
    v = runs["basic"]["values"]
    assert np.allclose(runs["basic"]["ci"][..., ::-1], 2 * v[..., None] - runs["percentile"]["ci"])
    assert runs["bca"]["delta_ci"][0].tolist() == [[0.0, 0.0, 0.0]]  # run 0 minus itself
    with pytest.raises(ValueError, match="CI method"):
        bootstrap_runs(gt, [res], ["AP"], n=5, method="normal")


# ------------------------------------------------------------------------------ coverage
# A small population like the built-in val set (weak detectors, 3 look-alike classes, mostly tiny
# objects) where AP on 30 images is biased upwards by about one bootstrap SD: 150 test sets,
# 200 resamples each, fixed seeds (about 9 s of CPU on one core, hence "slow").
COVERAGE_BAND = (0.88, 0.99)


@pytest.fixture(scope="module")
def coverage():
    scene = Scene(gt_per_image=10, dispersion=1.5, min_side=4, max_side=96, n_cats=3)
    common = dict(confusion=0.5, duplicates=0.3, fp_per_image=20, tp_score=0.0, fp_score=-0.5)
    a = DetectorModel(recall_logit=0.5, recall_slope=1.0, loc_px=0.7, **common)
    b = DetectorModel(recall_logit=1.0, recall_slope=0.7, loc_px=0.5, **common)
    gt, dets = make_population(4000, scene, [a, b], seed=0)
    truth = population_truth(gt, dets, ["AP"], (100,), [ALL])[:, 0]
    truth = np.r_[truth, truth[1] - truth[0]]  # A, B, B - A
    draws = coverage_draws(gt, dets, ["AP"], 30, 150, 200, 0, (100,), [ALL])
    cov = {}
    for m, ci in draws["ci"].items():
        lo, hi = ci[:, :, 0, 0], ci[:, :, 0, 1]
        cov[m] = ((lo <= truth) & (truth <= hi)).mean(0)
    return cov, draws, truth


@pytest.mark.slow
def test_default_interval_covers(coverage):
    """The default interval holds the population AP in 88-99% of the test sets, for each
    detector and for their difference. Why this cannot pass by accident: on the same draws the
    percentile interval (what the project used before) covers single-run AP in 83% and 75% of
    the sets and so fails the band - the band separates a biased interval from a corrected
    one; with 150 sets the binomial SE is 2.2 points at 93%, so a method whose true coverage is
    below 82% would reach 88% with a probability under 3%, per target."""
    cov, _, _ = coverage
    lo, hi = COVERAGE_BAND
    default = np.r_[cov[DEFAULT_CI][:2], cov[DEFAULT_DELTA_CI][2]]  # A, B; B - A
    assert ((default >= lo) & (default <= hi)).all(), cov
    assert (cov["percentile"][:2] < lo).all(), cov  # the band does reject the biased interval


@pytest.mark.slow
def test_the_bias_is_real_and_one_sided(coverage):
    """What the correction is for: AP on 30 images sits above the population's, resamples sit
    higher still, and the percentile interval misses by lying above the truth, not below."""
    _, draws, truth = coverage
    est = draws["estimates"][:, :2, 0]
    assert (est.mean(0) > truth[:2]).all()
    assert (draws["boot_median"][:, :2, 0].mean(0) > est.mean(0)).all()
    pct = draws["ci"]["percentile"][:, :2, 0]
    above, below = (pct[..., 0] > truth[:2]).mean(), (pct[..., 1] < truth[:2]).mean()
    assert above > 0.1 > below, (above, below)


def test_ap25_is_a_metric_where_the_thresholds_hold_025():
    """TinyPerson's AP25 (IoU 0.25/0.5/0.75) gets values and intervals like AP50: the point
    value equals the evaluator's on the same data, a bin's too, and without 0.25 among the
    thresholds it is refused by name."""
    gt, res = make_dataset(20, seed=7, n_cats=2, dets_per_image=20)
    thrs = [0.25, 0.5, 0.75]
    ref = evaluate(gt, res, errors=False, bins="coco", iou_thrs=thrs).summary
    out = bootstrap_runs(gt, [res], ["AP25", "AP25_small", "AP50"], n=20, iou_thrs=thrs)
    assert out["values"][0].tolist() == pytest.approx(
        [ref["AP25"], ref["AP25_small"], ref["AP50"]], abs=1e-12
    )
    assert ref["AP25"] > ref["AP50"]  # a looser match: the key is not AP50 under another name
    with pytest.raises(ValueError, match=r"AP25 needs IoU threshold 0.25"):
        bootstrap_runs(gt, [res], ["AP25"], n=5)
