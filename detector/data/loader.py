"""Datasets and data loaders from the config."""

from __future__ import annotations

from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .coco import CocoDataset
from .sampler import TrainBatchSampler
from .synthetic import builtin_paths
from .transforms import build_transforms
from .validation import DatasetError


def collate(batch):
    """``[(image, target), ...]`` -> ``(list[Tensor], list[dict])`` (images differ in size)."""
    images, targets = zip(*batch) if batch else ((), ())
    return list(images), list(targets)


def split_paths(cfg, split: str, generate: bool = True) -> tuple[str, str]:
    """The (image root, annotation JSON) of the train or val split of ``cfg``; the built-in set
    is generated into its cache first if needed (unless ``generate`` is false)."""
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    source = cfg.data.source
    if source == "builtin":
        paths = builtin_paths(cfg, generate=generate)
        return paths[f"{split}_images"], paths[f"{split}_ann"]
    if source == "coco":
        images, ann = cfg.data[f"{split}_images"], cfg.data[f"{split}_ann"]
        if not images or not ann:
            raise DatasetError(
                f"data.source=coco but data.{split}_images / data.{split}_ann are not set. "
                f"Fix: set both, e.g. data.{split}_images=path/to/images data.{split}_ann=path/to/{split}.json"
            )
        return images, ann
    raise DatasetError(f"data.source={source!r}: use 'builtin' or 'coco'")


def build_dataset(cfg, split: str, *, images=None, ann=None) -> CocoDataset:
    """The train or val dataset of ``cfg`` (or of explicit ``images``/``ann`` paths)."""
    if images is None or ann is None:
        d_images, d_ann = split_paths(cfg, split)
        images = d_images if images is None else images
        ann = d_ann if ann is None else ann
    train = split == "train"
    return CocoDataset(
        images,
        ann,
        transforms=build_transforms(cfg, train=train),
        train=train,
        keep_empty=bool(cfg.data.keep_empty_train) if train else True,
        strict=bool(cfg.data.strict),
        bad_area=cfg.data.bad_area,
        check_images=bool(cfg.data.check_images),
        cleaned_dir=Path(cfg.data.builtin.cache_dir) / "validated",
    )


def _batch_size(cfg, world_size: int) -> int:
    total = int(cfg.solver.ims_per_batch)
    if total < world_size or total % world_size:
        raise ValueError(
            f"solver.ims_per_batch={total} must be a positive multiple of the number of "
            f"processes ({world_size}); it is the batch size across all ranks"
        )
    return total // world_size


def build_train_loader(
    cfg, dataset: CocoDataset, *, rank: int = 0, world_size: int = 1, start_batch: int = 0
) -> DataLoader:
    """Infinite training loader; batch ``k`` is the same whatever the workers or resume point."""
    sampler = TrainBatchSampler(
        dataset.aspect_ratios(),
        _batch_size(cfg, world_size),
        seed=int(cfg.seed),
        rank=rank,
        world_size=world_size,
        group_by_aspect=bool(cfg.data.aspect_ratio_grouping),
        start_batch=start_batch,
    )
    workers = int(cfg.data.num_workers)
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        prefetch_factor=4 if workers > 0 else None,
    )


def build_test_loader(
    cfg, dataset: CocoDataset, *, rank: int = 0, world_size: int = 1, batch_size: int = 1
) -> DataLoader:
    """Deterministic loader; each image exactly once across ranks (``indices[rank::world_size]``)."""
    indices = list(range(len(dataset)))[rank::world_size]
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=indices,
        shuffle=False,
        num_workers=int(cfg.data.num_workers),
        collate_fn=collate,
        pin_memory=torch.cuda.is_available(),
    )
