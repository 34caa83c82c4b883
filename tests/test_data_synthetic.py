"""The built-in generator: deterministic, and its size histogram is what was configured."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from detector.data import generate_dataset
from detector.data.synthetic import CLASSES, DEFAULT_SIZE_MIX
from detector.utils.bins import assign_bin, get_bins


def _files(root):
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    generate_dataset(tmp_path / "a", 4, 64, seed=3)
    generate_dataset(tmp_path / "b", 4, 64, seed=3)
    generate_dataset(tmp_path / "c", 4, 64, seed=4)
    a, b, c = (_files(tmp_path / k) for k in "abc")
    assert a == b
    assert a.keys() == c.keys() and a["annotations.json"] != c["annotations.json"]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    images, ann = generate_dataset(out, 40, 256, seed=0)
    return images, json.loads(ann.read_text())


def test_size_histogram_matches_config(generated):
    _, data = generated
    edges = [DEFAULT_SIZE_MIX[0][0], *(hi for _, hi, _ in DEFAULT_SIZE_MIX)]
    bins = get_bins(edges)
    counts = Counter(assign_bin(a["area"], bins) for a in data["annotations"])
    n = len(data["annotations"])
    assert n > 500
    assert None not in counts  # nothing outside the configured range
    for (_lo, _hi, w), b in zip(DEFAULT_SIZE_MIX, bins[1:]):
        assert counts[b.name] / n == pytest.approx(w, abs=0.05), (b.name, counts)
    sides = [a["bbox"][2] for a in data["annotations"]]
    assert min(sides) < 4.5  # down to 4 px
    # heavily skewed to small: most objects are in the COCO "small" bin (< 32 px)
    assert sum(s <= 32 for s in sides) / n > 0.75


def test_classes_sizes_and_boxes_are_consistent(generated):
    images, data = generated
    assert [c["name"] for c in data["categories"]] == list(CLASSES)
    per_class = Counter(a["category_id"] for a in data["annotations"])
    assert set(per_class) == {1, 2, 3, 4, 5} and min(per_class.values()) > 0.1 * len(
        data["annotations"]
    )
    for a in data["annotations"]:
        x, y, w, h = a["bbox"]
        assert a["area"] == w * h and x >= 0 and y >= 0 and x + w <= 256 and y + h <= 256
    im = Image.open(images / data["images"][0]["file_name"])
    assert im.size == (256, 256) and im.mode == "RGB"


def test_clusters_and_occlusion_present(generated):
    """Some objects touch their neighbours, some partly overlap (occlusion)."""
    _, data = generated
    by_image = {}
    for a in data["annotations"]:
        by_image.setdefault(a["image_id"], []).append(a["bbox"])
    touching = overlapping = 0
    for boxes in by_image.values():
        b = np.array(boxes)
        x0, y0, x1, y1 = b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
        iw = np.minimum(x1[:, None], x1[None]) - np.maximum(x0[:, None], x0[None])
        ih = np.minimum(y1[:, None], y1[None]) - np.maximum(y0[:, None], y0[None])
        off = ~np.eye(len(b), dtype=bool)
        overlapping += int(((iw > 0) & (ih > 0) & off).sum()) // 2
        gap = np.maximum(-iw, -ih)
        touching += int(((gap >= 0) & (gap <= 1.0) & off).sum()) // 2
    assert touching > 20 and overlapping > 10


def test_custom_size_mix_is_respected(tmp_path):
    mix = ((8, 16, 0.5), (16, 32, 0.5))
    _, ann = generate_dataset(tmp_path, 24, 128, seed=5, size_mix=mix, empty_prob=0.0)
    data = json.loads(ann.read_text())
    bins = get_bins([8, 16, 32])
    counts = Counter(assign_bin(a["area"], bins) for a in data["annotations"])
    n = len(data["annotations"])
    assert None not in counts and n > 90
    assert counts["8-16"] / n == pytest.approx(0.5, abs=0.1)
    assert {im["width"] for im in data["images"]} == {128}
