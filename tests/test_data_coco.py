"""Loading real and built-in COCO data: counts, xyxy boxes, contiguous labels and back."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
import torch

from detector.config.loader import load_config
from detector.data import build_dataset, build_test_loader, builtin_paths, collate


@pytest.fixture(scope="module")
def tiny_cfg(tmp_path_factory):
    cache = tmp_path_factory.mktemp("builtin_cache")
    return load_config(
        None,
        [
            f"data.builtin.cache_dir={cache}",
            "data.builtin.num_train=6",
            "data.builtin.num_val=3",
            "data.builtin.image_size=96",
            "data.num_workers=0",
        ],
    )


def test_kit_ais_train(shared_data, tmp_path):
    root = shared_data / "kit_ais_aerial_cars"
    cfg = load_config(None, [f"data.builtin.cache_dir={tmp_path}", "data.num_workers=0"])
    ds = build_dataset(cfg, "val", images=root / "images", ann=root / "train.json")
    raw = json.loads((root / "train.json").read_text())
    assert len(ds) == 52 == len(raw["images"])
    assert ds.num_classes == 5 and ds.class_names == ["car", "truck", "bus", "minibus", "cyclist"]
    assert ds.cat_ids == [1, 2, 3, 4, 5]
    assert ds.label_to_cat_id == {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
    assert ds.ann_file == root / "train.json"  # clean file: evaluation uses it as is
    assert not ds.report.modified and ds.report.annotations == 2074

    img, t = ds[0]
    info = raw["images"][0]
    anns = [a for a in raw["annotations"] if a["image_id"] == info["id"]]
    assert img.dtype == torch.float32 and img.shape == (3, info["height"], info["width"])
    assert float(img.min()) >= 0.0 and float(img.max()) <= 1.0
    assert t["image_id"] == info["id"] and t["orig_size"] == (info["height"], info["width"])
    assert t["boxes"].shape == (len(anns), 4) and t["labels"].dtype == torch.int64
    x, y, w, h = anns[0]["bbox"]
    assert t["boxes"][0].tolist() == pytest.approx([x, y, x + w, y + h], abs=1e-3)
    # labels map back to the file's category ids
    back = sorted(ds.label_to_cat_id[int(lab)] for lab in t["labels"])
    assert back == sorted(a["category_id"] for a in anns)
    total = sum(len(ds.raw_target(i)["labels"]) for i in range(len(ds)))
    assert total == 2074


def test_noncontiguous_ids_map_back(shared_data):
    """The sahi file starts its category ids at 0: label 1 must map back to id 0."""
    from detector.data import load_coco_json

    ann = shared_data / "coco_eval_reference" / "sahi_visdrone_pair" / "dataset.json"
    data, _ = load_coco_json(ann, bad_area="recompute")
    ids = sorted(c["id"] for c in data["categories"])
    assert ids[0] == 0
    mapping = {i + 1: cid for i, cid in enumerate(ids)}
    assert mapping[1] == 0 and 0 not in mapping  # 0 stays the background label


def test_builtin_dataset_loads(tiny_cfg):
    paths = builtin_paths(tiny_cfg)
    raw = json.loads(Path(paths["train_ann"]).read_text())
    train = build_dataset(tiny_cfg, "train")
    val = build_dataset(tiny_cfg, "val")
    nonempty = {a["image_id"] for a in raw["annotations"]}
    assert len(train) == len(nonempty) and len(val) == 3
    assert train.num_classes == 5 and train.class_names == [
        "circle",
        "square",
        "triangle",
        "cross",
        "ring",
    ]
    assert train.label_to_cat_id == {1: 1, 2: 2, 3: 3, 4: 4, 5: 5}
    assert train.aspect_ratios() == [1.0] * len(train)
    n = sum(len(val.raw_target(i)["boxes"]) for i in range(len(val)))
    assert n == len(val.coco.getAnnIds())
    loader = build_test_loader(tiny_cfg, val)
    images, targets = next(iter(loader))
    assert isinstance(images, list) and images[0].shape == (3, 96, 96)
    assert targets[0]["size"] == (96, 96)
    b = targets[0]["boxes"]
    assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()


def test_builtin_paths_reused_and_race_safe(tiny_cfg):
    first = builtin_paths(tiny_cfg)
    stamp = Path(first["train_ann"]).read_bytes()
    cfg = load_config(
        None,
        [
            f"data.builtin.cache_dir={tiny_cfg.data.builtin.cache_dir}",
            "data.builtin.num_train=2",
            "data.builtin.num_val=1",
            "data.builtin.image_size=64",
        ],
    )
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(builtin_paths(cfg))) for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 3 and all(r == results[0] for r in results)
    assert results[0]["train_ann"] != first["train_ann"]  # other params, other directory
    assert json.loads(Path(results[0]["train_ann"]).read_text())["images"][0]["width"] == 64
    assert builtin_paths(tiny_cfg) == first and Path(first["train_ann"]).read_bytes() == stamp
    leftovers = [
        p.name for p in Path(tiny_cfg.data.builtin.cache_dir).iterdir() if p.name.startswith(".tmp")
    ]
    assert leftovers == []


def test_test_loader_shards_without_duplicates(tiny_cfg):
    val = build_dataset(tiny_cfg, "val")
    seen = []
    for rank in range(2):
        for _, targets in build_test_loader(tiny_cfg, val, rank=rank, world_size=2):
            seen += [t["image_id"] for t in targets]
    assert sorted(seen) == sorted(val.image_ids)


def test_collate_keeps_lists():
    a = (torch.zeros(3, 4, 5), {"image_id": 1})
    b = (torch.zeros(3, 6, 5), {"image_id": 2})
    images, targets = collate([a, b])
    assert [i.shape[1] for i in images] == [4, 6] and [t["image_id"] for t in targets] == [1, 2]
