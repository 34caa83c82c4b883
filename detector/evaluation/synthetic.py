"""Generated COCO ground truth and results for parity tests and the benchmark.

Sizes are heavily skewed to small objects (sqrt(area) log-uniform from 2 to 200 px), a share of
GT are crowd boxes, some images have no GT, one category never gets a detection, and scores are
rounded so that ties are common. Detections are jittered copies of GT (some with a wrong class),
duplicates and background boxes.

:func:`make_population` builds a large population straight as evaluator arrays, from detector
models whose behaviour is set by a few numbers, for the bootstrap coverage study
(``benchmarks/bench_bootstrap_coverage.py``); :func:`subset_images` draws test sets from it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from .coco_io import Detections, GroundTruth


def make_dataset(
    n_images: int = 500,
    gt_per_image: float = 7.0,
    dets_per_image: int = 100,
    n_cats: int = 10,
    crowd_frac: float = 0.03,
    empty_frac: float = 0.05,
    seed: int = 0,
    image_size: int = 800,
) -> tuple[dict, list[dict]]:
    rng = np.random.default_rng(seed)
    images = [
        {"id": i + 1, "file_name": f"{i + 1:06d}.jpg", "width": image_size, "height": image_size}
        for i in range(n_images)
    ]
    categories = [{"id": c + 1, "name": f"class{c + 1}"} for c in range(n_cats)]
    anns, results = [], []
    aid = 1
    for im in images:
        n_gt = 0 if rng.random() < empty_frac else int(rng.poisson(gt_per_image))
        side = np.exp(rng.uniform(np.log(2), np.log(200), n_gt))
        aspect = np.exp(rng.normal(0, 0.3, n_gt))
        w = np.maximum(side * aspect, 1.0)
        h = np.maximum(side / aspect, 1.0)
        x = rng.uniform(0, image_size - w)
        y = rng.uniform(0, image_size - h)
        cats = rng.integers(1, n_cats + 1, n_gt)
        # the last category is annotated but never detected
        crowd = rng.random(n_gt) < crowd_frac
        gboxes = []
        for j in range(n_gt):
            bb = [
                round(float(x[j]), 2),
                round(float(y[j]), 2),
                round(float(w[j]), 2),
                round(float(h[j]), 2),
            ]
            anns.append(
                {
                    "id": aid,
                    "image_id": im["id"],
                    "category_id": int(cats[j]),
                    "bbox": bb,
                    "area": bb[2] * bb[3],
                    "iscrowd": int(crowd[j]),
                }
            )
            aid += 1
            gboxes.append((bb, int(cats[j])))
        dets = []
        for bb, c in gboxes:
            for _ in range(int(rng.integers(0, 4))):
                jit = rng.normal(0, 0.12, 4)
                bw, bh = bb[2] * np.exp(jit[2]), bb[3] * np.exp(jit[3])
                bx, by = bb[0] + jit[0] * bb[2], bb[1] + jit[1] * bb[3]
                cc = c if rng.random() < 0.85 else int(rng.integers(1, n_cats + 1))
                dets.append(([bx, by, bw, bh], cc, rng.uniform(0.2, 1.0)))
        while len(dets) < dets_per_image:
            s = float(np.exp(rng.uniform(np.log(2), np.log(150))))
            bx, by = rng.uniform(0, image_size - s, 2)
            dets.append(
                (
                    [bx, by, s, s * np.exp(rng.normal(0, 0.3))],
                    int(rng.integers(1, n_cats + 1)),
                    rng.uniform(0, 0.8),
                )
            )
        for bb, c, s in dets[:dets_per_image]:
            if c == n_cats and n_cats > 1:
                c = 1
            results.append(
                {
                    "image_id": im["id"],
                    "category_id": int(c),
                    "bbox": [round(float(v), 2) for v in bb],
                    "score": round(float(s), 2),
                }
            )
    gt = {"images": images, "annotations": anns, "categories": categories}
    return gt, results


# --------------------------------------------------------------- populations for coverage studies


@dataclass(frozen=True)
class Scene:
    """How a generated population's images look (one row of GT per object)."""

    gt_per_image: float = 20.0
    dispersion: float = 2.0  # gamma shape of the per-image object rate (lower = more uneven)
    min_side: float = 4.0  # sqrt(area) log-uniform between these, in px
    max_side: float = 64.0
    n_cats: int = 5
    image_size: int = 512
    difficulty_sd: float = 0.7  # per-image logit offset shared by all detectors (pairs correlate)
    hardness_sd: float = 0.8  # per-object logit offset shared by all detectors


@dataclass(frozen=True)
class DetectorModel:
    """A detector whose behaviour is known: recall, localisation and scores by object size."""

    recall_logit: float = 0.0  # logit of finding a 16 px object in an average image
    recall_slope: float = 1.0  # logit change per doubling of the object's side
    loc_px: float = 1.0  # sd of each box coordinate's error, px ...
    loc_rel: float = 0.08  # ... plus this fraction of the object's side
    confusion: float = 0.1  # share of found objects given a wrong class
    duplicates: float = 0.1  # share of found objects with a second, looser box
    score_gain: float = 0.8  # how much a found object's score logit follows its recall logit
    tp_score: float = 0.5  # score logit of a found object
    fp_score: float = -1.5  # score logit of a background box
    fp_per_image: float = 10.0


def make_population(
    n_images: int, scene: Scene, detectors: list[DetectorModel], seed: int = 0
) -> tuple[GroundTruth, list[Detections]]:
    """A large test population as evaluator arrays (no JSON): its AP is the value that small test
    sets drawn from it estimate. All detectors see the same images and share the per-image and
    per-object difficulty, so their errors correlate the way two real models' do."""
    rng = np.random.default_rng(seed)
    rate = scene.gt_per_image * rng.gamma(scene.dispersion, 1 / scene.dispersion, n_images)
    counts = rng.poisson(rate)
    img = np.repeat(np.arange(n_images), counts)
    n = len(img)
    side = np.exp(rng.uniform(np.log(scene.min_side), np.log(scene.max_side), n))
    aspect = np.exp(rng.normal(0, 0.3, n))
    w, h = side * aspect, side / aspect
    x = rng.uniform(0, scene.image_size - w)
    y = rng.uniform(0, scene.image_size - h)
    cat = rng.integers(0, scene.n_cats, n)
    difficulty = rng.normal(0, scene.difficulty_sd, n_images)
    hardness = rng.normal(0, scene.hardness_sd, n)
    gt = GroundTruth(
        source="population",
        img_ids=np.arange(1, n_images + 1),
        cat_ids=np.arange(1, scene.n_cats + 1),
        cat_names=[f"class{c + 1}" for c in range(scene.n_cats)],
        img=img,
        cat=cat,
        bbox=np.stack([x, y, w, h], 1),
        area=w * h,
        crowd=np.zeros(n, bool),
        ann_ids=np.arange(1, n + 1),
    )
    out = []
    for m, sub in zip(detectors, rng.spawn(len(detectors))):
        logit = m.recall_logit + m.recall_slope * np.log2(side / 16) + difficulty[img] + hardness
        found = np.flatnonzero(sub.random(n) < 1 / (1 + np.exp(-logit)))
        dup = found[sub.random(len(found)) < m.duplicates]
        src = np.concatenate([found, dup])
        loose = np.r_[np.ones(len(found)), np.full(len(dup), 2.0)]
        sd = (m.loc_px + m.loc_rel * side[src]) * loose
        box = gt.bbox[src] + sub.normal(0, 1, (len(src), 4)) * sd[:, None]
        box[:, 2:] = np.maximum(box[:, 2:], 1.0)
        dcat = cat[src].copy()
        wrong = sub.random(len(src)) < m.confusion
        if scene.n_cats > 1:
            dcat[wrong] = (dcat[wrong] + sub.integers(1, scene.n_cats, wrong.sum())) % scene.n_cats
        s_logit = m.tp_score + m.score_gain * (logit[src] - m.recall_logit) - (loose - 1)
        s_logit = s_logit + sub.normal(0, 1, len(src))
        # background boxes: more on hard images (low difficulty offset)
        n_fp = sub.poisson(m.fp_per_image * np.exp(-0.5 * difficulty), n_images)
        fp_img = np.repeat(np.arange(n_images), n_fp)
        fs = np.exp(sub.uniform(np.log(scene.min_side), np.log(scene.max_side), len(fp_img)))
        fbox = np.stack(
            [
                sub.uniform(0, scene.image_size - fs),
                sub.uniform(0, scene.image_size - fs),
                fs,
                fs * np.exp(sub.normal(0, 0.3, len(fs))),
            ],
            1,
        )
        score = 1 / (1 + np.exp(-np.r_[s_logit, sub.normal(m.fp_score, 1, len(fp_img))]))
        out.append(
            Detections(
                source="population",
                img=np.r_[img[src], fp_img],
                cat=np.r_[dcat, sub.integers(0, scene.n_cats, len(fp_img))],
                bbox=np.concatenate([box, fbox]),
                score=score,
            )
        )
    return gt, out


def subset_images(
    gt: GroundTruth, dets: list[Detections], images: np.ndarray
) -> tuple[GroundTruth, list[Detections]]:
    """The test set made of ``images`` (distinct indices into ``gt``), re-indexed from 0."""
    images = np.sort(np.asarray(images))
    new = np.full(gt.num_images, -1)
    new[images] = np.arange(len(images))
    keep = new[gt.img] >= 0
    g = GroundTruth(
        source=gt.source,
        img_ids=gt.img_ids[images],
        cat_ids=gt.cat_ids,
        cat_names=gt.cat_names,
        img=new[gt.img[keep]],
        cat=gt.cat[keep],
        bbox=gt.bbox[keep],
        area=gt.area[keep],
        crowd=gt.crowd[keep],
        ann_ids=gt.ann_ids[keep],
    )
    sub = []
    for d in dets:
        k = new[d.img] >= 0
        sub.append(Detections(d.source, new[d.img[k]], d.cat[k], d.bbox[k], d.score[k]))
    return g, sub


def population_truth(
    gt: GroundTruth,
    dets: list[Detections],
    keys: list[str],
    max_dets: tuple[int, ...] = (1, 10, 100),
    bins: Any = "coco",
) -> np.ndarray:
    """(runs, keys) metric values on the whole population: what a test set estimates."""
    from .bootstrap import bootstrap_runs

    out = bootstrap_runs(gt, dets, keys, n=0, bins=bins, max_dets=max_dets, method="basic")
    return out["values"]


def coverage_draws(
    gt: GroundTruth,
    dets: list[Detections],
    keys: list[str],
    images: int,
    sets: int,
    resamples: int,
    seed: int = 0,
    max_dets: tuple[int, ...] = (1, 10, 100),
    bins: Any = "coco",
    level: float = 0.95,
) -> dict:
    """Bootstrap intervals of every method on ``sets`` test sets of ``images`` images drawn
    (without replacement) from a population, for each run and for each run minus run 0.

    One :func:`~detector.evaluation.bootstrap.bootstrap_runs` per set (the code path of
    ``smalldet compare``), then every method on its resamples. Returns ``{"targets": names,
    "estimates": (sets, targets, keys), "ci": {method: (sets, targets, keys, 2)},
    "boot_median", "boot_sd": (sets, targets, keys)}``; targets are runs ``0..R-1`` then
    differences ``"r-0"``.
    """
    from .bootstrap import CI_METHODS, bootstrap_runs, interval

    rng = np.random.default_rng([seed, 2])
    n_runs = len(dets)
    names = [str(r) for r in range(n_runs)] + [f"{r}-0" for r in range(1, n_runs)]
    est = np.empty((sets, len(names), len(keys)))
    med, sd = np.empty_like(est), np.empty_like(est)
    cis = {m: np.empty((sets, len(names), len(keys), 2)) for m in CI_METHODS}
    for s in range(sets):
        g, sub = subset_images(gt, dets, rng.choice(gt.num_images, images, replace=False))
        out = bootstrap_runs(
            g,
            sub,
            keys,
            n=resamples,
            seed=seed * 100_003 + s,
            bins=bins,
            max_dets=max_dets,
            level=level,
            method="bca",
        )
        v, smp, jk = out["values"], out["samples"], out["jackknife"]
        v = np.concatenate([v, v[1:] - v[:1]])
        smp = np.concatenate([smp, smp[:, 1:] - smp[:, :1]], 1)
        jk = np.concatenate([jk, jk[:, 1:] - jk[:, :1]], 1)
        est[s] = v
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN: an empty bin
            med[s], sd[s] = np.nanmedian(smp, axis=0), np.nanstd(smp, axis=0)
            for m in CI_METHODS:
                cis[m][s, :n_runs] = interval(
                    smp[:, :n_runs], v[:n_runs], jk[:, :n_runs], level, m, (0, 1)
                )
                cis[m][s, n_runs:] = interval(
                    smp[:, n_runs:], v[n_runs:], jk[:, n_runs:], level, m, (-1, 1)
                )
    return {"targets": names, "estimates": est, "ci": cis, "boot_median": med, "boot_sd": sd}
