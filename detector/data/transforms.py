"""Detection transforms on ``(image, target)`` with torchvision.transforms.v2 and tv_tensors.

Every transform takes and returns ``(image, target)`` where ``target["boxes"]`` is a
``tv_tensors.BoundingBoxes`` in XYXY. Randomness comes from torch's global RNG, which the dataset
seeds per sample, so a pipeline is reproducible for a given (index, sample_seed).

No default transform shrinks anything: train/test sizes come from ``cfg.data.transforms``.
"""

from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from detector.config.loader import ConfigError

PER_BOX_KEYS = ("labels", "area", "iscrowd")


def keep_boxes(target: dict, keep: torch.Tensor) -> dict:
    """``target`` with only the boxes ``keep`` selects, and their per-box fields with them."""
    out = dict(target)
    boxes = target["boxes"]
    out["boxes"] = tv_tensors.wrap(boxes.as_subclass(torch.Tensor)[keep], like=boxes)
    for k in PER_BOX_KEYS:
        if k in target:
            out[k] = target[k][keep]
    return out


def _hw(image: torch.Tensor) -> tuple[int, int]:
    return int(image.shape[-2]), int(image.shape[-1])


class Compose:
    def __init__(self, transforms: list):
        self.transforms = list(transforms)

    def __call__(self, image, target):
        for t in self.transforms:
            image, target = t(image, target)
        return image, target

    def __repr__(self) -> str:
        return f"Compose({self.transforms})"


class HorizontalFlip:
    """Flip left-right with probability ``p`` (v2.functional on image and boxes)."""

    def __init__(self, p: float = 0.5):
        self.p = float(p)

    def __call__(self, image, target):
        if self.p > 0 and torch.rand(()) < self.p:
            image = F.horizontal_flip(image)
            target = dict(target, boxes=F.horizontal_flip(target["boxes"]))
        return image, target

    def __repr__(self) -> str:
        return f"HorizontalFlip(p={self.p})"


class ResizeShortSide:
    """Resize so the short side is one of ``scales`` (chosen at random; empty = native size),
    times a factor drawn uniformly from ``jitter``, with the long side capped at ``max_size``.

    With ``scales=[]`` and ``jitter=(1, 1)`` it is the identity: nothing is shrunk by default.
    """

    def __init__(
        self,
        scales: list[int] | tuple = (),
        jitter: tuple[float, float] = (1.0, 1.0),
        max_size: int = 0,
    ):
        self.scales = [int(s) for s in scales]
        self.jitter = (float(jitter[0]), float(jitter[1]))
        self.max_size = int(max_size)
        if self.jitter[0] <= 0 or self.jitter[1] < self.jitter[0]:
            raise ConfigError(
                f"data.transforms.scale_jitter={list(jitter)}: need 0 < low <= high, e.g. [0.8, 1.25]"
            )

    def target_size(self, h: int, w: int) -> tuple[int, int]:
        short = min(h, w)
        if self.scales:
            short = (
                self.scales[int(torch.randint(len(self.scales), ()))]
                if len(self.scales) > 1
                else self.scales[0]
            )
        lo, hi = self.jitter
        if hi > lo:
            short = short * (lo + (hi - lo) * float(torch.rand(())))
        elif lo != 1.0:
            short = short * lo
        scale = short / min(h, w)
        if self.max_size > 0 and max(h, w) * scale > self.max_size:
            scale = self.max_size / max(h, w)
        return max(1, round(h * scale)), max(1, round(w * scale))

    def __call__(self, image, target):
        h, w = _hw(image)
        nh, nw = self.target_size(h, w)
        if (nh, nw) == (h, w):
            return image, target
        image = F.resize(image, [nh, nw], antialias=True)
        target = dict(target, boxes=F.resize(target["boxes"], [nh, nw]))
        return image, target

    def __repr__(self) -> str:
        return (
            f"ResizeShortSide(scales={self.scales}, jitter={self.jitter}, max_size={self.max_size})"
        )


class RandomCropVisible:
    """Random ``size`` x ``size`` crop (or the whole side where the image is smaller).

    A box is kept when at least ``min_visibility`` of its area stays inside the crop; it is then
    clipped to the crop. Slivers below that fraction are dropped with their labels.
    """

    def __init__(self, size: int, min_visibility: float = 0.5):
        self.size = int(size)
        self.min_visibility = float(min_visibility)

    def __call__(self, image, target):
        h, w = _hw(image)
        ch, cw = min(self.size, h), min(self.size, w)
        if (ch, cw) == (h, w):
            return image, target
        top = int(torch.randint(h - ch + 1, ()))
        left = int(torch.randint(w - cw + 1, ()))
        boxes = target["boxes"].as_subclass(torch.Tensor)
        full = (boxes[:, 2] - boxes[:, 0]).clamp(min=0) * (boxes[:, 3] - boxes[:, 1]).clamp(min=0)
        image = F.crop(image, top, left, ch, cw)
        moved = boxes - torch.tensor([left, top, left, top], dtype=boxes.dtype)
        moved[:, 0::2] = moved[:, 0::2].clamp(0, cw)
        moved[:, 1::2] = moved[:, 1::2].clamp(0, ch)
        bw, bh = moved[:, 2] - moved[:, 0], moved[:, 3] - moved[:, 1]
        vis = bw * bh / full.clamp(min=1e-6)
        keep = (bw > 0) & (bh > 0) & (vis >= self.min_visibility)
        target = dict(
            target, boxes=tv_tensors.BoundingBoxes(moved, format="XYXY", canvas_size=(ch, cw))
        )
        return image, keep_boxes(target, keep)

    def __repr__(self) -> str:
        return f"RandomCropVisible(size={self.size}, min_visibility={self.min_visibility})"


class DropDegenerate:
    """Remove boxes smaller than ``min_size`` px on a side (after resizing/cropping)."""

    def __init__(self, min_size: float = 1e-3):
        self.min_size = float(min_size)

    def __call__(self, image, target):
        b = target["boxes"].as_subclass(torch.Tensor)
        keep = ((b[:, 2] - b[:, 0]) >= self.min_size) & ((b[:, 3] - b[:, 1]) >= self.min_size)
        if bool(keep.all()):
            return image, target
        return image, keep_boxes(target, keep)


def build_transforms(cfg, train: bool) -> Compose:
    """The train or test pipeline from ``cfg.data.transforms``."""
    t = cfg.data.transforms
    ops: list = []
    if train:
        jitter = tuple(t.scale_jitter) if t.scale_jitter else (1.0, 1.0)
        if len(jitter) != 2:
            raise ConfigError(
                f"data.transforms.scale_jitter={list(t.scale_jitter)}: give [low, high]"
            )
        if t.train_scales or jitter != (1.0, 1.0):
            ops.append(ResizeShortSide(t.train_scales, jitter, t.max_size))
        if t.crop_size and t.crop_size > 0:
            ops.append(RandomCropVisible(t.crop_size, t.min_box_visibility))
        if t.hflip and t.hflip > 0:
            ops.append(HorizontalFlip(t.hflip))
        ops.append(DropDegenerate())
    elif t.test_scale and t.test_scale > 0:
        ops.append(ResizeShortSide([t.test_scale], (1.0, 1.0), t.max_size))
    return Compose(ops)


__all__ = [
    "Compose",
    "DropDegenerate",
    "HorizontalFlip",
    "RandomCropVisible",
    "ResizeShortSide",
    "build_transforms",
]
