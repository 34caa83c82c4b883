"""Sliced training (``data.tiles``): tile geometry and box clipping worked out by hand, the
forced-positive share against its binomial band, determinism per (seed, epoch, index), the
config and dataset checks, and the shipped tiles recipe.

The exact resume of a tiled run is in tests/test_engine_train.py.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from detector.config.loader import ConfigError, load_config, tile_window
from detector.data import DatasetError, RandomTile, build_dataset, build_train_loader
from detector.data.tiles import TileChoice

ROOT = Path(__file__).resolve().parents[1]


def _target(boxes: list[list[float]], h: int, w: int) -> dict:
    n = len(boxes)
    t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {
        "boxes": tv_tensors.BoundingBoxes(t, format="XYXY", canvas_size=(h, w)),
        "labels": torch.arange(1, n + 1),
        "area": torch.tensor([float((b[2] - b[0]) * (b[3] - b[1])) for b in boxes]),
        "iscrowd": torch.zeros(n, dtype=torch.int64),
    }


def _image(h: int, w: int) -> tv_tensors.Image:
    """Pixel (c, y, x) holds a value that says where it came from."""
    return tv_tensors.Image((torch.arange(3 * h * w) % 251).to(torch.uint8).reshape(3, h, w))


# ------------------------------------------------------------------------------- geometry


def test_window_is_size_over_scale_rounded_half_up():
    assert tile_window(512, 1.0) == 512
    assert tile_window(512, 2.0) == 256
    assert tile_window(512, 3.0) == 171  # 170.67
    assert tile_window(5, 2.0) == 3  # 2.5 rounds up, not to even
    with pytest.raises(ConfigError, match=r"data\.tiles\.size=1 .*less than one pixel"):
        tile_window(1, 3.0)


def test_tile_crops_clips_drops_and_scales_boxes_by_hand():
    # 30x40 image; a 10 px window at (top 1, left 4) covers x in [4, 14], y in [1, 11]
    boxes = [
        [2, 3, 6, 7],  # x clipped to [4, 6]: 2x4 of 4x4 = 0.5 visible -> kept
        [8, 0, 14, 4],  # y clipped to [1, 4]: 6x3 of 6x4 = 0.75 -> kept
        [13, 10, 17, 14],  # clipped to [13, 14]x[10, 11]: 1 of 16 -> dropped
        [20, 20, 25, 25],  # outside -> dropped
    ]
    target = _target(boxes, 30, 40)
    image = _image(30, 40)
    tiles = RandomTile(20, scale=2.0, min_visibility=0.5)
    assert tiles.window == 10
    out_img, out = tiles.apply(image, target, TileChoice(top=1, left=4, side=10, forced=False))
    assert out_img.shape == (3, 20, 20)
    # shifted by (-4, -1), then doubled
    expected = [[0, 4, 4, 12], [8, 0, 20, 6]]
    assert out["boxes"].tolist() == expected
    assert tuple(out["boxes"].canvas_size) == (20, 20)
    assert out["labels"].tolist() == [1, 2]
    assert out["area"].tolist() == [16.0, 24.0]  # the JSON area stays (evaluation frame)
    assert out["tile"] == (4, 1, 10, 10)

    # at scale 1 the tile is the source pixels themselves
    same = RandomTile(10, scale=1.0, min_visibility=0.5)
    pix, out1 = same.apply(image, target, TileChoice(top=1, left=4, side=10, forced=False))
    assert torch.equal(pix.as_subclass(torch.Tensor), image[:, 1:11, 4:14])
    assert out1["boxes"].tolist() == [[0, 2, 2, 6], [4, 0, 10, 3]]


def test_min_visibility_is_the_kept_fraction():
    target = _target([[2, 3, 6, 7]], 30, 40)  # 0.5 visible in the tile below
    tile = TileChoice(top=1, left=4, side=10, forced=False)
    _, kept = RandomTile(10, min_visibility=0.5).apply(_image(30, 40), target, tile)
    _, dropped = RandomTile(10, min_visibility=0.51).apply(_image(30, 40), target, tile)
    assert len(kept["boxes"]) == 1 and len(dropped["boxes"]) == 0
    assert dropped["labels"].numel() == 0 and dropped["area"].numel() == 0


def test_forced_tile_offsets_are_the_ones_holding_the_object():
    # 10x40 image, 10 px window: one row (top 0); a box on x in [20, 24] is whole in a tile
    # starting at left 14 .. 20
    tiles = RandomTile(10, positive_fraction=1.0, min_visibility=0.5)
    box = torch.tensor([[20.0, 2.0, 24.0, 6.0]])
    g = torch.Generator().manual_seed(0)
    picks = [tiles.choose(10, 40, box, g) for _ in range(300)]
    assert all(p.forced and p.top == 0 and p.side == 10 for p in picks)
    assert {p.left for p in picks} == set(range(14, 21))

    # a box longer than the window: the window lies inside it (10 of 30 px = 1/3 visible)
    long = torch.tensor([[5.0, 0.0, 35.0, 4.0]])
    reach = RandomTile(10, positive_fraction=1.0, min_visibility=0.3)
    lefts = {reach.choose(10, 40, long, g).left for _ in range(300)}
    assert lefts == set(range(5, 26))
    # ... unless 1/3 is below min_visibility: no tile can hold it, so the tile is uniform
    picks = [RandomTile(10, 1.0, 1.0, 0.5).choose(10, 40, long, g) for _ in range(300)]
    assert not any(p.forced for p in picks)
    assert {p.left for p in picks} == set(range(0, 31))


def test_no_object_means_a_uniform_tile():
    tiles = RandomTile(10, positive_fraction=1.0)
    g = torch.Generator().manual_seed(1)
    picks = [tiles.choose(10, 12, torch.zeros(0, 4), g) for _ in range(200)]
    assert not any(p.forced for p in picks)
    assert {p.left for p in picks} == {0, 1, 2}


def test_positive_share_is_within_its_binomial_band():
    # 10x40 image, 10 px window, one 2x2 box in the corner. Forced tiles (share p) hold it
    # always; a uniform tile (left in 0..30) holds it at >= 0.5 visibility only at left 0 or 1
    # (left 1 shows half of it): 2 of 31. So a tile holds the box with q = p + (1 - p) * 2/31.
    p, n = 0.3, 2000
    tiles = RandomTile(10, positive_fraction=p, min_visibility=0.5)
    target = _target([[0, 0, 2, 2]], 10, 40)
    image = _image(10, 40)
    g = torch.Generator().manual_seed(1234)
    forced = holding = 0
    for _ in range(n):
        tile = tiles.choose(10, 40, target["boxes"].as_subclass(torch.Tensor), g)
        _, out = tiles.apply(image, target, tile)
        forced += tile.forced
        holding += len(out["boxes"]) == 1
        assert not tile.forced or len(out["boxes"]) == 1
    q = p + (1 - p) * 2 / 31
    for count, share in ((forced, p), (holding, q)):
        sd = math.sqrt(n * share * (1 - share))
        assert abs(count - n * share) <= 4 * sd, (count, n * share, sd)


# ------------------------------------------------------------------- datasets and configs


def _coco(tmp_path: Path, sizes: list[tuple[int, int]]) -> tuple[Path, Path]:
    """A COCO split of ``sizes`` (w, h) PNGs, each with two boxes near its top-left corner."""
    root = tmp_path / "images"
    root.mkdir(exist_ok=True)
    images, anns = [], []
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes, start=1):
        name = f"im{i}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / name)
        images.append({"id": i, "file_name": name, "width": w, "height": h})
        for k, bbox in enumerate(([2, 2, 6, 5], [12, 8, 5, 6])):
            anns.append(
                {"id": 10 * i + k, "image_id": i, "category_id": 1, "bbox": bbox, "area": 0}
            )
    for a in anns:
        a["area"] = a["bbox"][2] * a["bbox"][3]
    ann = tmp_path / "train.json"
    ann.write_text(
        json.dumps({"images": images, "annotations": anns, "categories": [{"id": 1, "name": "c"}]})
    )
    return root, ann


def _cfg(root: Path, ann: Path, *extra: str):
    return load_config(
        None,
        [
            "data.source=coco",
            f"data.train_images={root}",
            f"data.train_ann={ann}",
            "data.num_workers=0",
            "data.tiles.enabled=true",
            "data.tiles.size=16",
            "data.tiles.scale=2.0",
            *extra,
        ],
    )


def test_same_seed_and_index_give_the_same_tile(tmp_path):
    root, ann = _coco(tmp_path, [(48, 32), (40, 40), (64, 24)])
    ds = build_dataset(_cfg(root, ann), "train")
    a_img, a = ds[(1, 77)]
    b_img, b = ds[(1, 77)]
    assert torch.equal(a_img, b_img) and torch.equal(a["boxes"], b["boxes"])
    assert a["tile"] == b["tile"] and a_img.shape == (3, 16, 16)
    # other seeds move the tile (8 px window in a 40x40 image: 33x33 positions)
    assert len({ds[(1, s)][1]["tile"] for s in range(20)}) > 5


def test_resumed_loader_yields_the_same_tiles(tmp_path):
    # the tile of batch k is the same from a fresh loader and from one resumed at batch k
    root, ann = _coco(tmp_path, [(48, 32), (40, 40), (64, 24)])
    cfg = _cfg(root, ann, "solver.ims_per_batch=2")
    ds = build_dataset(cfg, "train")
    fresh = iter(build_train_loader(cfg, ds))
    batches = [next(fresh) for _ in range(4)]  # a loader epoch is 1 batch: crosses 3 epochs
    resumed = next(iter(build_train_loader(cfg, ds, start_batch=3)))
    assert [t["tile"] for t in resumed[1]] == [t["tile"] for t in batches[3][1]]
    assert all(torch.equal(x, y) for x, y in zip(resumed[0], batches[3][0]))
    assert len({t["tile"] for _, ts in batches for t in ts}) > 1


def test_tiles_off_leaves_the_pipeline_as_it_was(tmp_path):
    root, ann = _coco(tmp_path, [(48, 32)])
    cfg = _cfg(root, ann, "data.tiles.enabled=false")
    ds = build_dataset(cfg, "train")
    assert not any(isinstance(t, RandomTile) for t in ds.transforms.transforms)
    on = build_dataset(_cfg(root, ann), "train")
    assert isinstance(on.transforms.transforms[0], RandomTile)
    # validation images stay whole
    val = build_dataset(_cfg(root, ann), "val", images=root, ann=ann)
    assert not any(isinstance(t, RandomTile) for t in val.transforms.transforms)


def test_tile_larger_than_some_images_names_them_and_the_fix(tmp_path):
    # scale 2, size 16 -> 8 px window; size 40 -> 20 px: too big for the 64x16 and 18x30 images
    root, ann = _coco(tmp_path, [(48, 32), (64, 16), (18, 30)])
    with pytest.raises(DatasetError) as err:
        build_dataset(_cfg(root, ann, "data.tiles.size=40"), "train")
    msg = str(err.value)
    assert msg.startswith(str(ann))
    assert "data.tiles.size=40 at data.tiles.scale=2 cuts a 20x20 px window" in msg
    assert "larger than 2 of the 3 training images" in msg
    assert "2 'im2.png' (64x16)" in msg and "3 'im3.png' (18x30)" in msg
    assert "im1.png" not in msg
    # smallest side 16 px: 32 at scale 2 fits it, as does scale 2.5 for size 40
    assert "Fix: set data.tiles.size<=32" in msg and "data.tiles.scale>=2.5" in msg
    build_dataset(_cfg(root, ann, "data.tiles.size=32"), "train")  # the fix works
    build_dataset(_cfg(root, ann, "data.tiles.size=40", "data.tiles.scale=2.5"), "train")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.tiles.scale=0"], "data.tiles.scale must be > 0, got 0.0"),
        (["data.tiles.scale=-1"], "data.tiles.scale must be > 0, got -1.0"),
        (["data.tiles.size=0"], "data.tiles.size must be >= 1, got 0"),
        (["data.tiles.positive_fraction=1.5"], "data.tiles.positive_fraction must be in [0, 1]"),
        (["data.tiles.min_visibility=-0.1"], "data.tiles.min_visibility must be in [0, 1]"),
        (
            ["data.tiles.enabled=true", "data.tiles.size=1", "data.tiles.scale=4"],
            "less than one pixel. Fix: raise data.tiles.size",
        ),
        (
            ["data.tiles.enabled=true", "data.tiles.size=48", "data.transforms.crop_size=32"],
            "Fix: set data.transforms.crop_size=0",
        ),
        (
            ["data.tiles.enabled=true", "data.tiles.size=48", "data.transforms.train_scales=[64]"],
            "Fix: set data.transforms.train_scales=[]",
        ),
        (
            # built-in images are 256 px by default: a 300 px window cannot fit
            ["data.tiles.enabled=true", "data.tiles.size=600", "data.tiles.scale=2"],
            "cuts a 300x300 px window, larger than the built-in images "
            "(data.builtin.image_size=256). Fix: set data.tiles.size<=512, or "
            "data.tiles.scale>=2.344, or data.builtin.image_size>=300",
        ),
    ],
)
def test_bad_tile_settings_fail_at_config_load(overrides, expected):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert str(err.value).startswith("command-line override: ")
    assert expected in str(err.value)


def test_tile_settings_on_the_edges_are_accepted():
    cfg = load_config(
        None,
        [
            "data.tiles.enabled=true",
            "data.tiles.size=256",
            "data.tiles.positive_fraction=0",
            "data.tiles.min_visibility=1",
        ],
    )
    assert cfg.data.tiles.size == 256 and cfg.data.tiles.scale == 1.0
    load_config(None, ["data.tiles.size=100000"])  # off: no fit check against the images


def test_aerial_cars_tiles_recipe(shared_data):
    cfg = load_config(ROOT / "configs" / "aerial_cars_tiles.yaml")
    assert cfg.data.tiles.enabled and cfg.data.transforms.crop_size == 0
    d = shared_data / "kit_ais_aerial_cars"
    over = [f"data.train_images={d / 'images'}", f"data.train_ann={d / 'train.json'}"]
    cfg = load_config(ROOT / "configs" / "aerial_cars_tiles.yaml", over)
    ds = build_dataset(cfg, "train")  # every training image takes the window
    image, target = ds[(0, 5)]
    size = cfg.data.tiles.size
    assert image.shape == (3, size, size)
    assert target["tile"][2] == tile_window(size, cfg.data.tiles.scale)
