"""Datasets and data loaders from the config."""

from __future__ import annotations

import logging
import signal
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from detector.config.loader import ConfigError

from .coco import CocoDataset
from .sampler import TrainBatchSampler
from .synthetic import builtin_paths
from .tiles import build_tiles, check_tiles_fit
from .transforms import Compose, build_transforms
from .validation import DatasetError

logger = logging.getLogger(__name__)


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
    """The train or val dataset of ``cfg`` (or of explicit ``images``/``ann`` paths).

    Both splits get the same checks at construction (the JSON validated, and with
    ``data.check_images`` every image opened), so a bad val set fails before training starts.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if cfg.data.source == "builtin":
        keys = ["data.builtin.cache_dir"] * 2
    else:
        keys = [f"data.{split}_images", f"data.{split}_ann"]
    if images is not None:
        keys[0] = f"the image root {images}"
    if ann is not None:
        keys[1] = f"the annotation path {ann}"
    if images is None or ann is None:
        d_images, d_ann = split_paths(cfg, split)
        images = d_images if images is None else images
        ann = d_ann if ann is None else ann
    train = split == "train"
    transforms = build_transforms(cfg, train=train)
    tiles = build_tiles(cfg) if train else None
    if tiles is not None:
        # the tile comes first: it sees the native image, the flips and jitter see the tile
        transforms = Compose([tiles, *transforms.transforms])
    dataset = CocoDataset(
        images,
        ann,
        transforms=transforms,
        train=train,
        keep_empty=bool(cfg.data.keep_empty_train) if train else True,
        strict=bool(cfg.data.strict),
        bad_area=cfg.data.bad_area,
        check_images=bool(cfg.data.check_images),
        cleaned_dir=Path(cfg.data.builtin.cache_dir) / "validated",
        images_key=keys[0],
        ann_key=keys[1],
    )
    if tiles is not None:
        check_tiles_fit(dataset, tiles)
        logger.info("training on tiles: %r", tiles)
    return dataset


def check_same_categories(train: CocoDataset, val: CocoDataset) -> None:
    """Refuse a val set whose category ids differ from the train set's.

    The model predicts the train set's labels ``1..K`` and evaluation writes them back through
    the val set's map, so different ids would score every detection against the wrong class.
    A name that differs for the same id is only logged (a rename, or a sign of the wrong file).
    """
    if train.cat_ids != val.cat_ids:
        only_train = sorted(set(train.cat_ids) - set(val.cat_ids))
        only_val = sorted(set(val.cat_ids) - set(train.cat_ids))
        raise DatasetError(
            f"{val.source_ann_file}: section 'categories' has ids {val.cat_ids}, the training "
            f"set {train.source_ann_file} has {train.cat_ids} (only in train: {only_train}, "
            f"only in val: {only_val}); detections would be scored against the wrong classes. "
            "Fix: give both files the same 'categories' list (a class without val objects "
            "stays listed)."
        )
    renamed = [
        f"{cid}: {a!r} vs {b!r}"
        for cid, a, b in zip(train.cat_ids, train.class_names, val.class_names)
        if a != b
    ]
    if renamed:
        logger.warning(
            "%s: category names differ from the training set %s for the same ids (%s); "
            "check that both files label the same classes.",
            val.source_ann_file,
            train.source_ann_file,
            ", ".join(renamed),
        )


def _batch_size(cfg, world_size: int) -> int:
    """Images per rank; the world size is known only at launch, so no config check sees this."""
    total = int(cfg.solver.ims_per_batch)
    if total < world_size or total % world_size:
        raise ConfigError(
            f"solver.ims_per_batch={total} must be a positive multiple of the number of "
            f"processes ({world_size}); it is the batch size across all ranks. Fix: set "
            f"solver.ims_per_batch={max(1, total // world_size) * world_size} or start "
            "a number of processes that divides it."
        )
    return total // world_size


def build_train_loader(
    cfg,
    dataset: CocoDataset,
    *,
    batch_size: int | None = None,
    rank: int = 0,
    world_size: int = 1,
    start_batch: int = 0,
) -> DataLoader:
    """Infinite training loader; batch ``k`` is the same whatever the workers or resume point.

    ``batch_size`` is the images per rank per batch (a micro-batch with gradient accumulation);
    without it, ``solver.ims_per_batch // world_size``. Passing it spares the caller a rewritten
    copy of the config.
    """
    if batch_size is None:
        batch_size = _batch_size(cfg, world_size)
    elif isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int (images per rank), got {batch_size!r}")
    # tiles are square: grouping them by their source image's aspect would only delay samples
    tiled = bool(cfg.data.tiles.enabled)
    sampler = TrainBatchSampler(
        [1.0] * len(dataset) if tiled else dataset.aspect_ratios(),
        batch_size,
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
        worker_init_fn=ignore_interrupt if workers > 0 else None,
    )


def ignore_interrupt(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: a worker ignores SIGINT.

    Ctrl-C reaches every process of the terminal's foreground group; a worker that died of it
    could end the main process ("DataLoader worker exited unexpectedly") before the trainer's
    handler finished the iteration and wrote its checkpoint. The main process alone decides to
    stop. SIGTERM keeps its default: multiprocessing ends its workers with it at exit, and a
    worker that ignored it would hang the exit of a process that stopped on an exception.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)


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
        worker_init_fn=ignore_interrupt if int(cfg.data.num_workers) > 0 else None,
    )
