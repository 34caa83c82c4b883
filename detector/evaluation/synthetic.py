"""Generated COCO ground truth and results for parity tests and the benchmark.

Sizes are heavily skewed to small objects (sqrt(area) log-uniform from 2 to 200 px), a share of
GT are crowd boxes, some images have no GT, one category never gets a detection, and scores are
rounded so that ties are common. Detections are jittered copies of GT (some with a wrong class),
duplicates and background boxes.
"""

from __future__ import annotations

import numpy as np


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
