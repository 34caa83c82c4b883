"""Data and device inputs are checked when the run is set up, before any training step.

Each case here used to fail late (a traceback in the sampler, the model or the evaluation) or
with a misleading message; now it is one :class:`SmalldetError` naming the file or setting,
what was found and the fix.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from detector.config.loader import load_config
from detector.data import CocoDataset, DatasetError, build_dataset, check_same_categories
from detector.engine import distributed as du
from detector.utils.errors import SmalldetError


def _gt(n_images: int = 2) -> dict:
    return {
        "images": [
            {"id": i, "file_name": f"im{i}.png", "width": 32, "height": 24}
            for i in range(1, n_images + 1)
        ],
        "annotations": [
            {"id": 10 + i, "image_id": i, "category_id": 1, "bbox": [2, 2, 8, 6], "area": 48}
            for i in range(1, n_images + 1)
        ],
        "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "bus"}],
    }


def _split(tmp_path, name: str, data: dict) -> tuple:
    """Write ``name``.json and its images (24x32 PNGs) under ``tmp_path``."""
    root = tmp_path / f"{name}_images"
    root.mkdir()
    for im in data["images"]:
        Image.fromarray(np.zeros((24, 32, 3), np.uint8)).save(root / im["file_name"])
    ann = tmp_path / f"{name}.json"
    ann.write_text(json.dumps(data))
    return root, ann


def _cfg(tmp_path, train=None, val=None, extra=()):
    """A coco-source config; a split not given points at a good file."""
    train = train or _split(tmp_path, "good_train", _gt())
    val = val or _split(tmp_path, "good_val", _gt())
    return load_config(
        None,
        [
            "data.source=coco",
            f"data.train_images={train[0]}",
            f"data.train_ann={train[1]}",
            f"data.val_images={val[0]}",
            f"data.val_ann={val[1]}",
            f"data.builtin.cache_dir={tmp_path / 'cache'}",
            "data.num_workers=0",
            *extra,
        ],
    )


# ------------------------------------------------------------------------ val like train


def test_val_missing_image_fails_at_build_with_check_images(tmp_path):
    root, ann = _split(tmp_path, "val", _gt(3))
    (root / "im2.png").unlink()
    cfg = _cfg(tmp_path, val=(root, ann), extra=["data.check_images=true"])
    with pytest.raises(DatasetError) as e:
        build_dataset(cfg, "val")
    msg = str(e.value)
    assert msg.startswith(f"{ann}: 1 of 3 images cannot be used") and "\n" not in msg
    assert "image 2 (file " in msg and "val_images/im2.png'): file not found" in msg
    assert "check the image root (data.val_images)" in msg
    cfg.data.check_images = False
    assert len(build_dataset(cfg, "val")) == 3  # without the check, construction is cheap


def test_val_paths_named_in_fixes(tmp_path):
    cfg = _cfg(tmp_path)
    cfg.data.val_ann = str(tmp_path / "nope.json")
    with pytest.raises(DatasetError, match=r"nope\.json: annotation file not found.*data\.val_ann"):
        build_dataset(cfg, "val")
    cfg.data.val_images = str(tmp_path / "no_dir")
    with pytest.raises(
        DatasetError, match=r"no_dir is not a directory\. Fix: check data\.val_images"
    ):
        build_dataset(cfg, "val")


def test_many_bad_images_one_line_all_logged(tmp_path, caplog):
    root, ann = _split(tmp_path, "train", _gt(5))
    for i in range(1, 6):
        (root / f"im{i}.png").unlink()
    with caplog.at_level(logging.ERROR), pytest.raises(DatasetError) as e:
        CocoDataset(root, ann, check_images=True)
    msg = str(e.value)
    assert "5 of 5 images cannot be used" in msg and "... and 2 more (all in the log)" in msg
    assert "\n" not in msg
    assert all(f"im{i}.png" in caplog.text for i in range(1, 6))


# ---------------------------------------------------------------------- empty sections


@pytest.mark.parametrize("split", ["train", "val"])
def test_no_images_is_one_clear_error(tmp_path, split):
    data = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "car"}]}
    paths = _split(tmp_path, split, data)
    cfg = _cfg(tmp_path, **{split: paths})
    purpose = "train on" if split == "train" else "evaluate"
    with pytest.raises(
        DatasetError,
        match=rf"{split}\.json: section 'images' is empty, so there is nothing to {purpose}\. "
        rf"Fix: point data\.{split}_ann at",
    ):
        build_dataset(cfg, split)


@pytest.mark.parametrize("split", ["train", "val"])
def test_no_categories_is_one_clear_error(tmp_path, split):
    data = _gt()
    data["annotations"], data["categories"] = [], []
    cfg = _cfg(tmp_path, **{split: _split(tmp_path, split, data)})
    with pytest.raises(
        DatasetError, match=rf"{split}\.json: section 'categories' is empty\. Fix: list every class"
    ):
        build_dataset(cfg, split)


@pytest.mark.parametrize("keep_empty", ["false", "true"])
def test_train_without_any_usable_annotation(tmp_path, keep_empty):
    data = _gt(3)
    data["annotations"][0]["bbox"] = [2, 2, 0, 6]  # degenerate: dropped
    data["annotations"][1]["iscrowd"] = 1  # crowd: not a training target
    data["annotations"][2]["bbox"] = [99, 99, 4, 4]  # outside the image: dropped
    cfg = _cfg(tmp_path, train=_split(tmp_path, "train", data))
    cfg.data.keep_empty_train = keep_empty == "true"
    with pytest.raises(DatasetError) as e:
        build_dataset(cfg, "train")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'train.json'}: no annotation to train on (3 images")
    assert "3 annotations in the file: 1 crowd, 2 dropped" in msg and "data.train_ann" in msg
    assert not (tmp_path / "cache" / "validated").exists()  # nothing written for a failed start


def test_val_without_annotations_warns(tmp_path):
    data = _gt()
    data["annotations"] = []
    cfg = _cfg(tmp_path, val=_split(tmp_path, "val", data))
    ds = build_dataset(cfg, "val")
    assert len(ds) == 2
    assert any("section 'annotations' is empty" in m for m in ds.report.messages)


# ---------------------------------------------------------------- categories across splits


def test_val_categories_must_match_train(tmp_path):
    cfg = _cfg(tmp_path)
    train = build_dataset(cfg, "train")
    check_same_categories(train, build_dataset(cfg, "val"))  # same file layout: fine
    data = _gt()
    data["categories"] = [{"id": 1, "name": "car"}, {"id": 3, "name": "bus"}]
    root, ann = _split(tmp_path, "val", data)
    other = CocoDataset(root, ann)
    with pytest.raises(
        DatasetError,
        match=r"val\.json: section 'categories' has ids \[1, 3\], the training set .* has \[1, 2\] "
        r"\(only in train: \[2\], only in val: \[3\]\).*Fix: give both files the same",
    ):
        check_same_categories(train, other)


def test_renamed_category_only_warns(tmp_path, caplog):
    cfg = _cfg(tmp_path)
    data = _gt()
    data["categories"][1]["name"] = "truck"
    root, ann = _split(tmp_path, "val", data)
    with caplog.at_level(logging.WARNING):
        check_same_categories(build_dataset(cfg, "train"), CocoDataset(root, ann))
    assert "2: 'bus' vs 'truck'" in caplog.text


# ------------------------------------------------------------------------------- device


@pytest.fixture
def no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)


@pytest.mark.parametrize("pref", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_requested_without_cuda(no_cuda, pref):
    with pytest.raises(du.DeviceError) as e:
        du.resolve_device(pref)
    msg = str(e.value)
    assert isinstance(e.value, SmalldetError) and isinstance(e.value, RuntimeError)
    assert f"device='{pref if pref != 'cuda' else 'cuda:0'}' needs CUDA" in msg
    assert "torch.cuda.is_available()=False, 0 CUDA device(s)" in msg
    assert "Fix: set device=cpu, or device=auto" in msg


def test_auto_without_cuda_is_cpu(no_cuda):
    assert du.resolve_device("auto") == torch.device("cpu")
    assert du.resolve_device("cpu") == torch.device("cpu")


def test_cuda_index_beyond_device_count(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert du.resolve_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(
        du.DeviceError, match=r"device='cuda:2' asks for CUDA device 2, but this machine has 2"
    ):
        du.resolve_device("cuda:2")
    with pytest.raises(
        du.DeviceError,
        match=r"device='cuda:3' \(from device=auto, LOCAL_RANK=3\) asks for CUDA device 3",
    ):
        du.resolve_device("auto", local_rank=3)


@pytest.mark.parametrize("pref", ["gpu", "", "cuda:x"])
def test_unknown_device_name(pref):
    with pytest.raises(du.DeviceError, match=r"is not a device name\. Fix: set device=cpu"):
        du.resolve_device(pref)


def test_explicit_gpu_shared_by_local_ranks(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(du.DeviceError, match=r"puts every rank on the same GPU.*device=cuda"):
        du.init_distributed("cuda:0")
