"""Sliced training on the fly: each training sample is a square tile cut from its image.

The tile is a ``window`` x ``window`` square of the source image (``window = data.tiles.size /
data.tiles.scale``, rounded), resized to ``data.tiles.size`` px, so objects reach the model
``scale`` times larger than in the image and a large scene costs one tile per sample, with no
tiled copy written to disk. With probability ``positive_fraction`` the tile is placed around
one object picked at random (a *forced positive*); otherwise its position is uniform over the
image. Boxes cut by the tile border are clipped to it and dropped when less than
``min_visibility`` of their area stays inside.

Randomness comes from torch's generator, which :class:`~detector.data.coco.CocoDataset` seeds
per sample with the seed the :class:`~detector.data.sampler.TrainBatchSampler` draws from
``(seed, epoch)`` for each position: the tile of a sample is a function of (config seed, epoch,
index) alone, so worker processes and ``--resume`` see the very same tiles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torchvision import tv_tensors
from torchvision.ops import box_area
from torchvision.transforms.v2 import functional as F

from detector.config.loader import tile_window

from .coco import CocoDataset
from .transforms import keep_boxes
from .validation import DatasetError

# images named in a "tile larger than the image" error (all of them are counted)
_SHOWN = 3


@dataclass(frozen=True)
class TileChoice:
    """Where a tile lies in its source image, in source pixels, and whether it was forced."""

    top: int
    left: int
    side: int
    forced: bool


def _axis_range(lo: torch.Tensor, hi: torch.Tensor, side: int, extent: int) -> tuple[int, int]:
    """Tile offsets along one axis that keep the most of ``[lo, hi]`` inside the tile.

    A box that fits gets every offset that contains it whole; a longer one, every offset that
    lies inside it. Where rounding leaves no integer offset, the tile is centred on the box.
    Both ends are clamped to the image (``[0, extent - side]``).
    """
    a, b = float(torch.minimum(lo, hi - side)), float(torch.maximum(lo, hi - side))
    first, last = math.ceil(a), math.floor(b)
    if first > last:
        first = last = math.floor((float(lo) + float(hi) - side) / 2 + 0.5)
    top = extent - side
    return min(max(first, 0), top), min(max(last, 0), top)


def _randint(first: int, last: int, generator: torch.Generator | None) -> int:
    """Uniform integer in ``[first, last]`` (inclusive) from ``generator``."""
    return first + int(torch.randint(last - first + 1, (), generator=generator))


class RandomTile:
    """Cut a ``size`` x ``size`` training tile at ``scale`` from the image (see the module).

    The first transform of the train pipeline: it sees the image at its native size and the
    boxes in JSON pixels. ``target["tile"]`` records ``(left, top, side, side)`` in source
    pixels, for debugging and for drawing where a sample came from.
    """

    def __init__(
        self,
        size: int,
        scale: float = 1.0,
        positive_fraction: float = 0.5,
        min_visibility: float = 0.5,
    ):
        self.size = int(size)
        self.scale = float(scale)
        self.positive_fraction = float(positive_fraction)
        self.min_visibility = float(min_visibility)
        # raises ConfigError for a size or scale that the config checks would refuse
        self.window = tile_window(self.size, self.scale)

    def choose(
        self, h: int, w: int, boxes: torch.Tensor, generator: torch.Generator | None = None
    ) -> TileChoice:
        """The tile for an ``h`` x ``w`` image with XYXY ``boxes`` (source pixels).

        Draws, in this order: the forced-positive coin, the object (forced only), the row and
        the column, so a given generator state always gives the same tile.
        """
        side = self.window
        if side > h or side > w:
            raise ValueError(
                f"a {side} px tile window does not fit a {w}x{h} image (build_dataset checks "
                "this for every training image; was the image changed after it ran?)"
            )
        forced = bool(torch.rand((), generator=generator) < self.positive_fraction)
        candidates = self._reachable(boxes) if forced else []
        if forced and len(candidates):
            x1, y1, x2, y2 = boxes[int(candidates[_randint(0, len(candidates) - 1, generator)])]
            rows = _axis_range(y1, y2, side, h)
            cols = _axis_range(x1, x2, side, w)
        else:
            forced = False  # an image without a reachable object gets a uniform tile
            rows, cols = (0, h - side), (0, w - side)
        top = _randint(*rows, generator)
        left = _randint(*cols, generator)
        return TileChoice(top, left, side, forced)

    def _reachable(self, boxes: torch.Tensor) -> torch.Tensor:
        """Indices of the boxes one tile can hold at ``min_visibility`` (a box longer than the
        window shows at most ``window / length`` of that side)."""
        if boxes.numel() == 0:
            return torch.zeros(0, dtype=torch.int64)
        bw = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6)
        bh = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
        best = (self.window / bw).clamp(max=1) * (self.window / bh).clamp(max=1)
        return torch.nonzero(best >= self.min_visibility).flatten()

    def apply(
        self, image: torch.Tensor, target: dict, tile: TileChoice
    ) -> tuple[torch.Tensor, dict]:
        """Crop ``tile`` out of ``image``/``target``, resize it to ``size``, drop the slivers."""
        boxes = target["boxes"]
        full = box_area(boxes.as_subclass(torch.Tensor))
        cut = F.crop(boxes, tile.top, tile.left, tile.side, tile.side)  # clipped to the tile
        shown = box_area(cut.as_subclass(torch.Tensor))
        keep = (shown > 0) & (shown >= self.min_visibility * full)
        image = F.crop(image, tile.top, tile.left, tile.side, tile.side)
        if tile.side != self.size:
            image = F.resize(image, [self.size, self.size], antialias=True)
            cut = F.resize(cut, [self.size, self.size])
        target = dict(
            target,
            boxes=tv_tensors.BoundingBoxes(
                cut.as_subclass(torch.Tensor), format="XYXY", canvas_size=(self.size, self.size)
            ),
            tile=(tile.left, tile.top, tile.side, tile.side),
        )
        return image, keep_boxes(target, keep)

    def __call__(self, image: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        h, w = int(image.shape[-2]), int(image.shape[-1])
        tile = self.choose(h, w, target["boxes"].as_subclass(torch.Tensor))
        return self.apply(image, target, tile)

    def __repr__(self) -> str:
        return (
            f"RandomTile(size={self.size}, scale={self.scale}, window={self.window}, "
            f"positive_fraction={self.positive_fraction}, min_visibility={self.min_visibility})"
        )


def build_tiles(cfg) -> RandomTile | None:
    """The tile transform of ``cfg.data.tiles``, or None when tiling is off."""
    t = cfg.data.tiles
    if not t.enabled:
        return None
    return RandomTile(t.size, t.scale, t.positive_fraction, t.min_visibility)


def check_tiles_fit(dataset: CocoDataset, tiles: RandomTile) -> None:
    """Refuse, at dataset build, training images smaller than the tile window (from the JSON
    sizes, no image opened), naming them and the settings that would fit them all."""
    side = tiles.window
    images = [dataset.coco.imgs[iid] for iid in dataset.image_ids]
    small = [im for im in images if int(im["width"]) < side or int(im["height"]) < side]
    if not small:
        return
    shortest = min(min(int(im["width"]), int(im["height"])) for im in images)
    named = ", ".join(
        f"{im['id']} '{im['file_name']}' ({im['width']}x{im['height']})" for im in small[:_SHOWN]
    )
    more = f" and {len(small) - _SHOWN} more" if len(small) > _SHOWN else ""
    fit_size = max(1, math.floor(shortest * tiles.scale))
    fit_scale = math.ceil(tiles.size / shortest * 1000) / 1000
    raise DatasetError(
        f"{dataset.source_ann_file}: data.tiles.size={tiles.size} at data.tiles.scale="
        f"{tiles.scale:g} cuts a {side}x{side} px window from each image, larger than "
        f"{len(small)} of the {len(images)} training images: {named}{more}. Fix: set "
        f"data.tiles.size<={fit_size} (fits the smallest side, {shortest} px, at this scale), "
        f"or data.tiles.scale>={fit_scale:g}, or leave the small images out of "
        f"{dataset.ann_key}."
    )


__all__ = ["RandomTile", "TileChoice", "build_tiles", "check_tiles_fit"]
