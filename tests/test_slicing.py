"""Sliced inference: tile geometry, NMS/NMM on IoU and IoS, boxes cut by tile borders found
once, and the batched tile pipeline against whole-image inference (values worked out by hand)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from detector.engine.slicing import (
    SliceError,
    SliceSpec,
    cut_mask,
    merge_detections,
    nmm,
    nms,
    predict_sliced,
    predict_whole,
    tile_grid,
    tile_origins,
)

# ---------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "length, size, overlap, origins",
    [
        (1000, 512, 0.2, [0, 410, 488]),  # overlap int(102.4) = 102, step 410, last flush
        (922, 512, 0.2, [0, 410]),  # the second tile ends exactly at the border
        (300, 512, 0.2, [0]),  # smaller than a tile: one tile, clipped
        (512, 512, 0.2, [0]),
        (1024, 512, 0.0, [0, 512]),
        (1100, 512, 0.5, [0, 256, 512, 588]),
    ],
)
def test_tile_origins_by_hand(length, size, overlap, origins):
    assert tile_origins(length, size, overlap) == origins


def test_tile_grid_rows_and_flush_last_tile():
    grid = tile_grid(600, 1000, 512, 0.2)
    assert grid == [
        (0, 0, 512, 512),
        (410, 0, 922, 512),
        (488, 0, 1000, 512),
        (0, 88, 512, 600),
        (410, 88, 922, 600),
        (488, 88, 1000, 600),
    ]
    assert tile_grid(300, 200, 512, 0.2) == [(0, 0, 200, 300)]


@pytest.mark.parametrize("h, w", [(37, 1000), (513, 700), (1500, 1024)])
def test_tiles_cover_every_pixel_and_stay_inside(h, w):
    seen = torch.zeros(h, w, dtype=torch.bool)
    for x0, y0, x1, y1 in tile_grid(h, w, 256, 0.25):
        assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
        assert x1 - x0 == min(256, w) and y1 - y0 == min(256, h)
        seen[y0:y1, x0:x1] = True
    assert bool(seen.all())


def test_geometry_matches_sahi():
    slicing = pytest.importorskip("sahi.slicing")
    for h, w in [(600, 1000), (4000, 3500), (430, 1764)]:
        theirs = slicing.get_slice_bboxes(h, w, 512, 512, overlap_height_ratio=0.2,
                                          overlap_width_ratio=0.2)  # fmt: skip
        assert sorted(map(tuple, theirs)) == sorted(tile_grid(h, w, 512, 0.2))


def test_bad_settings_name_the_flag():
    with pytest.raises(SliceError, match="--overlap"):
        SliceSpec(size=512, overlap=1.0)
    with pytest.raises(SliceError, match="--merge"):
        SliceSpec(size=512, merge="wbf")
    with pytest.raises(SliceError, match="--slice "):
        SliceSpec(size=4)


# ----------------------------------------------------------------------------------- merging

A = [0.0, 0.0, 10.0, 10.0]


def _t(rows):
    return torch.tensor(rows, dtype=torch.float32)


def test_nms_iou_and_ios_by_hand():
    boxes = _t([A, [0, 0, 10, 8], [0, 0, 10, 4], [50, 50, 60, 60]])
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6])
    labels = torch.tensor([1, 1, 1, 1])
    # [0,0,10,8] has IoU 0.8 with A; [0,0,10,4] IoU 0.4 but IoS 40/40 = 1
    assert nms(boxes, scores, labels, "iou", 0.5).tolist() == [0, 2, 3]
    assert nms(boxes, scores, labels, "ios", 0.5).tolist() == [0, 3]
    assert nms(boxes, scores, labels, "iou", 0.3).tolist() == [0, 3]


def test_nms_is_class_wise_unless_agnostic():
    boxes = _t([A, A])
    scores = torch.tensor([0.9, 0.6])
    labels = torch.tensor([1, 2])
    assert nms(boxes, scores, labels, "iou", 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, labels, "iou", 0.5, class_agnostic=True).tolist() == [0]
    assert nms(boxes, scores, labels, "ios", 0.5, class_agnostic=True).tolist() == [0]


def test_nmm_unions_matches_with_the_best_score():
    # B = [2,0,12,10]: IoU with A = 80/120 = 0.67 -> merged into [0,0,12,10] with A's score
    boxes = _t([A, [2, 0, 12, 10], [20, 20, 30, 30]])
    out = nmm(boxes, torch.tensor([0.9, 0.8, 0.7]), torch.tensor([1, 1, 1]), "iou", 0.5)
    assert out[0].tolist() == [[0, 0, 12, 10], [20, 20, 30, 30]]
    assert out[1].tolist() == pytest.approx([0.9, 0.7])


def test_nmm_on_ios_merges_a_box_inside_another():
    # F inside E: IoU 25/400 = 0.06, IoS 25/25 = 1; F scores higher and absorbs E
    boxes = _t([[0, 0, 20, 20], [5, 5, 10, 10]])
    scores, labels = torch.tensor([0.5, 0.95]), torch.tensor([3, 4])
    b, s, lab = nmm(boxes, scores, labels, "ios", 0.5, class_agnostic=True)
    assert b.tolist() == [[0, 0, 20, 20]] and s.tolist() == pytest.approx([0.95])
    assert lab.tolist() == [4]
    assert len(nmm(boxes, scores, labels, "iou", 0.5, class_agnostic=True)[0]) == 2


def test_matching_is_sparse_but_complete():
    """Many boxes in a row: each overlaps only its neighbours; NMS on IoS keeps every other."""
    n = 600
    x = torch.arange(n, dtype=torch.float32) * 6
    boxes = torch.stack([x, torch.zeros(n), x + 10, torch.full((n,), 10.0)], 1)  # IoS 0.4
    scores = torch.linspace(1, 0.1, n)
    labels = torch.ones(n, dtype=torch.long)
    assert len(nms(boxes, scores, labels, "ios", 0.5)) == n
    assert nms(boxes, scores, labels, "ios", 0.3).tolist() == list(range(0, n, 2))


# ------------------------------------------------------------------------ boxes cut by borders

GRID = tile_grid(600, 1000, 512, 0.2)  # x tiles [0,512], [410,922], [488,1000]; y [0,512], [88,600]


def _merge(parts, spec):
    """``parts``: (tile index, box, score); boxes in image pixels, as the tiles saw them."""
    boxes = _t([b for _, b, _ in parts])
    tiles = _t([GRID[t] for t, _, _ in parts])
    cut = torch.stack(
        [cut_mask(boxes[k : k + 1], GRID[t], 600, 1000, spec.edge_margin)[0] for k, (t, _, _) in
         enumerate(parts)]
    )  # fmt: skip
    scores = torch.tensor([s for _, _, s in parts])
    return merge_detections(boxes, scores, torch.ones(len(parts), dtype=torch.long), cut, tiles,
                            spec)  # fmt: skip


def test_cut_mask_only_on_internal_sides():
    boxes = _t([[500, 100, 512, 120], [0, 0, 20, 20], [505, 300, 511, 320], [300, 490, 320, 512]])
    # right side of tile 0 (x=512) is internal, its left and top are image borders
    assert cut_mask(boxes, GRID[0], 600, 1000, 2.0).tolist() == [True, False, True, True]
    assert cut_mask(boxes, GRID[0], 600, 1000, -1).tolist() == [False] * 4


def test_object_narrower_than_the_overlap_is_found_once():
    # a 30 px car at x 505-535: tile 0 sees a 7 px sliver (IoU 0.23 with the car), tile 1 all
    parts = [(0, [505, 100, 512, 120], 0.6), (1, [505, 100, 535, 120], 0.9)]
    out = _merge(parts, SliceSpec(size=512))
    assert out["boxes"].tolist() == [[505, 100, 535, 120]]
    # without the border handling (SAHI's NMS on IoU) the sliver survives as a second object
    assert len(_merge(parts, SliceSpec(size=512, edge_margin=-1))["boxes"]) == 2


def test_object_wider_than_the_overlap_is_joined_from_its_parts():
    # 400 px object at x 300-700: each tile sees a part cut at an internal border; NMS would
    # keep all three (IoU 0.2-0.7), NMM on IoS chains only some of them
    parts = [
        (0, [300, 100, 512, 120], 0.8),
        (1, [410, 100, 700, 120], 0.9),
        (2, [488, 100, 700, 120], 0.7),
    ]
    out = _merge(parts, SliceSpec(size=512))
    assert out["boxes"].tolist() == [[300, 100, 700, 120]]
    assert out["scores"].tolist() == pytest.approx([0.9])


def test_two_neighbours_at_a_border_stay_two():
    # two cars side by side across the x = 512 border of tile 0: both seen whole by tile 1
    parts = [
        (0, [490, 100, 512, 120], 0.7),  # car 1 (x 490-520), cut
        (1, [490, 100, 520, 120], 0.9),
        (1, [522, 100, 550, 120], 0.8),  # car 2, only tile 1 sees it
    ]
    out = _merge(parts, SliceSpec(size=512))
    assert out["boxes"].tolist() == [[490, 100, 520, 120], [522, 100, 550, 120]]


# ---------------------------------------------------------------------- the batched pipeline


class GrayLevelDetector(nn.Module):
    """A perfect, truncating detector: each grey level > 0 is one object, its box the pixels
    of that level in the input (so an object cut by a tile comes back cut). Records the
    batch sizes and input shapes it was called with."""

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.calls: list[list[tuple]] = []

    def forward(self, images):
        self.calls.append([tuple(im.shape) for im in images])
        out = []
        for im in images:
            g = (im[0] * 255).round().long()
            boxes, scores = [], []
            for v in torch.unique(g).tolist():
                if v == 0:
                    continue
                ys, xs = torch.nonzero(g == v, as_tuple=True)
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                scores.append(v / 255)
            out.append(
                {
                    "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                    "scores": torch.tensor(scores, dtype=torch.float32),
                    "labels": torch.ones(len(boxes), dtype=torch.long),
                }
            )
        return out


OBJECTS = {  # grey level -> box in a 600 x 1000 image
    200: [20, 30, 60, 50],  # inside tile 0 only
    190: [505, 100, 535, 120],  # across x = 512, narrower than the overlap
    180: [300, 300, 700, 330],  # wider than the overlap: three parts
    170: [950, 500, 1000, 560],  # at the image corner
    160: [100, 495, 120, 530],  # across y = 512 (tile row 2 starts at y = 88)
}


def _scene() -> torch.Tensor:
    img = torch.zeros(3, 600, 1000, dtype=torch.uint8)
    for v, (x0, y0, x1, y1) in OBJECTS.items():
        img[:, y0:y1, x0:x1] = v
    return img


def test_sliced_pipeline_finds_every_object_once_in_batches():
    model = GrayLevelDetector()
    out = predict_sliced(model, [_scene()], SliceSpec(size=512, batch_size=4))[0]
    got = sorted(map(tuple, out["boxes"].tolist()))
    assert got == sorted(tuple(float(v) for v in b) for b in OBJECTS.values())
    assert [len(c) for c in model.calls] == [4, 2]  # 6 tiles, batched, not one call per tile


def test_slice_scale_resizes_tiles_and_maps_boxes_back():
    class FixedBox(GrayLevelDetector):
        def forward(self, images):
            self.calls.append([tuple(im.shape) for im in images])
            box = {"boxes": _t([[0, 0, 20, 20]]), "scores": torch.tensor([0.5])}
            return [dict(box, labels=torch.tensor([1])) for _ in images]

    model = FixedBox()
    spec = SliceSpec(size=32, overlap=0.0, scale=2.0, edge_margin=-1, batch_size=16)
    out = predict_sliced(model, [torch.zeros(3, 32, 64, dtype=torch.uint8)], spec)[0]
    assert model.calls == [[(3, 64, 64), (3, 64, 64)]]  # two 32 px tiles seen at 64 px
    assert sorted(out["boxes"].tolist()) == [[0, 0, 10, 10], [32, 0, 42, 10]]


def test_one_tile_covering_the_image_reproduces_whole_image_detections(tiny_model):
    """A random-weight tiny detector: slices at least as large as each image (scale 1) give
    exactly the whole-image detections, also with several images of different sizes."""
    torch.manual_seed(0)
    images = [torch.randint(0, 256, (3, 64, 80), dtype=torch.uint8),
              torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)]  # fmt: skip
    whole = predict_whole(tiny_model, images, batch_size=2)
    sliced = predict_sliced(tiny_model, images, SliceSpec(size=96, full_image=True))
    for w, s in zip(whole, sliced):
        assert len(w["boxes"]) > 0
        assert torch.equal(w["boxes"], s["boxes"]) and torch.equal(w["scores"], s["scores"])
        assert torch.equal(w["labels"], s["labels"])


@pytest.fixture(scope="module")
def tiny_model(tiny_config, tiny_cache, tmp_path_factory):
    from detector.config import load_config
    from detector.models import build_detector

    path = tiny_config(tmp_path_factory.mktemp("slicing") / "tiny.yaml", tiny_cache)
    torch.manual_seed(0)
    return build_detector(load_config(path), num_classes=5).eval()
