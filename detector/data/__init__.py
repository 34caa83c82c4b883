"""COCO-format datasets, validation, transforms, training tiles, batching and the built-in
synthetic dataset."""

from .coco import CocoDataset, open_image
from .loader import (
    build_dataset,
    build_test_loader,
    build_train_loader,
    check_same_categories,
    collate,
)
from .sampler import TrainBatchSampler
from .synthetic import CLASSES, builtin_paths, generate_dataset
from .tiles import RandomTile, build_tiles
from .transforms import build_transforms
from .validation import DatasetError, ValidationReport, load_coco_json, validate_coco

__all__ = [
    "CLASSES",
    "CocoDataset",
    "DatasetError",
    "RandomTile",
    "TrainBatchSampler",
    "ValidationReport",
    "build_dataset",
    "build_test_loader",
    "build_tiles",
    "build_train_loader",
    "build_transforms",
    "builtin_paths",
    "check_same_categories",
    "collate",
    "generate_dataset",
    "load_coco_json",
    "open_image",
    "validate_coco",
]
