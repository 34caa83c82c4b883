"""Sliced inference: a large image cut into overlapping tiles, the tiles run through the model in
batches, their boxes shifted back and merged, so that 10-30 px objects of a 4000 px scene are
seen at the resolution the model was trained on (Akyon et al. 2022, "SAHI", arXiv 2202.06934).

Geometry (:func:`tile_origins`) is SAHI's: the overlap is ``int(overlap * size)`` px, tiles step
by ``size`` minus that, and the last one is moved back to end flush with the border, so every
pixel is covered and no tile is padded. ``scale`` resizes each tile before the model (tiny
objects reach the size the model was trained on); boxes come back in original pixels.

Merging (:func:`merge_detections`) offers SAHI's options: class-wise (or class-agnostic) NMS,
or greedy NMM (SAHI's ``GREEDYNMM``: the best box absorbs every box it matches, the union
becomes the box), matched on IoU or IoS (intersection over the smaller box). NMS on IoU is
``torchvision.ops.batched_nms`` (it drops boxes strictly above the threshold); the others walk
sparse match lists (a match is at or above the threshold, as in SAHI), found strip by strip so
that 20 000 boxes of a large scene never build a 20 000 x 20 000 matrix.

Boxes cut by an internal tile border. With overlap, an object narrower than the overlap lies
whole in some tile, while its neighbour sees a truncated part that NMS on IoU often keeps (the
half of a car has IoU 0.5 with the car) and NMM would merge into a box too large. A box within
``edge_margin`` px of a tile side that is not an image border is therefore "cut": it is dropped
when a whole box of its class covers at least ``cut_cover`` of it (the object was found whole
elsewhere), and the cut boxes left (objects larger than the overlap, seen only in parts) are
joined into one box when they agree on the region their two tiles share (IoU of the parts
cropped to it >= ``threshold``; chains across several tiles join too). ``edge_margin < 0``
turns this off, as in SAHI.

The optional whole-image pass (``full_image``, for objects larger than a tile) runs the image
as the config's test pipeline sees it (``data.transforms.test_scale``); tiles ignore that key,
their scale is ``scale`` alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn
from torchvision.ops import batched_nms, box_area, box_iou
from torchvision.transforms.v2 import functional as F

from detector.utils.errors import SmalldetError

MERGES = ("nms", "nmm")
METRICS = ("iou", "ios")
Tile = tuple[int, int, int, int]  # x0, y0, x1, y1 in image pixels
SizeFn = Callable[[int, int], tuple[int, int]]  # (h, w) -> (h', w') the model sees


class SliceError(SmalldetError, ValueError):
    """A slicing setting that cannot work; the message names the flag."""


@dataclass(frozen=True)
class SliceSpec:
    """How to slice and merge (the ``--slice ...`` flags of predict and evaluate)."""

    size: int  # tile side in original pixels (--slice)
    overlap: float = 0.2  # fraction of the tile shared with its neighbour (--overlap)
    scale: float = 1.0  # each tile resized by this before the model (--slice-scale)
    full_image: bool = False  # one more pass on the whole image (--full-image)
    merge: str = "nms"  # nms | nmm (--merge)
    metric: str = "iou"  # iou | ios (--match-metric)
    threshold: float = 0.5  # (--match-threshold)
    class_agnostic: bool = False  # (--class-agnostic)
    edge_margin: float = 2.0  # px; a box this close to an internal tile side is cut; < 0: off
    cut_cover: float = 0.5  # a cut box this covered by a whole box of its class is dropped
    batch_size: int = 8  # tiles per forward pass (--batch-size)

    def __post_init__(self) -> None:
        def bad(flag: str, value, want: str) -> SliceError:
            return SliceError(f"{flag} {value}: {want}")

        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 8:
            raise bad("--slice", self.size, "give the tile side in pixels, at least 8, e.g. 512")
        if not 0 <= self.overlap < 1 or int(self.overlap * self.size) >= self.size:
            raise bad("--overlap", self.overlap, "give a fraction in [0, 1), e.g. 0.2")
        if not (math.isfinite(self.scale) and 0 < self.scale <= 16):
            raise bad("--slice-scale", self.scale, "give a factor in (0, 16], e.g. 2")
        if self.merge not in MERGES:
            raise bad("--merge", self.merge, f"use one of {', '.join(MERGES)}")
        if self.metric not in METRICS:
            raise bad("--match-metric", self.metric, f"use one of {', '.join(METRICS)}")
        if not 0 < self.threshold <= 1:
            raise bad("--match-threshold", self.threshold, "give a value in (0, 1], e.g. 0.5")
        if not 0 < self.cut_cover <= 1:
            raise bad("cut_cover", self.cut_cover, "give a value in (0, 1]")
        if not math.isfinite(self.edge_margin):
            raise bad("--edge-margin", self.edge_margin, "give pixels (negative: off)")
        if isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise bad("--batch-size", self.batch_size, "give at least 1 tile per forward pass")

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------------- geometry


def tile_origins(length: int, size: int, overlap: float) -> list[int]:
    """Start offsets of the tiles along one side: steps of ``size - int(overlap * size)``, the
    last tile flush with the border; one tile (clipped to the side) when it fits."""
    if length <= size:
        return [0]
    step = size - int(overlap * size)
    return [*range(0, length - size, step), length - size]


def tile_grid(height: int, width: int, size: int, overlap: float) -> list[Tile]:
    """Every tile of an image, row by row, as ``(x0, y0, x1, y1)``."""
    ys = tile_origins(height, size, overlap)
    xs = tile_origins(width, size, overlap)
    return [(x, y, min(x + size, width), min(y + size, height)) for y in ys for x in xs]


def cut_mask(boxes: torch.Tensor, tile: Tile, height: int, width: int, margin: float):
    """Which boxes (image coordinates) reach within ``margin`` px of a side of ``tile`` that is
    not an image border, i.e. may be an object the tile truncated."""
    cut = torch.zeros(len(boxes), dtype=torch.bool)
    if margin < 0 or not len(boxes):
        return cut
    x0, y0, x1, y1 = tile
    if x0 > 0:
        cut |= boxes[:, 0] <= x0 + margin
    if y0 > 0:
        cut |= boxes[:, 1] <= y0 + margin
    if x1 < width:
        cut |= boxes[:, 2] >= x1 - margin
    if y1 < height:
        cut |= boxes[:, 3] >= y1 - margin
    return cut


# ----------------------------------------------------------------------------------- matching


def overlap_matrix(a: torch.Tensor, b: torch.Tensor, metric: str) -> torch.Tensor:
    """``(len(a), len(b))`` overlaps of xyxy boxes: ``iou``, ``ios`` (over the smaller box) or
    ``cover`` (over the box of ``a``)."""
    if metric == "iou":
        return box_iou(a, b)
    lt = torch.max(a[:, None, :2], b[None, :, :2])
    rb = torch.min(a[:, None, 2:], b[None, :, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    area_a = box_area(a)[:, None]
    if metric == "ios":
        den = torch.min(area_a, box_area(b)[None, :])
    elif metric == "cover":
        den = area_a.expand_as(inter)
    else:
        raise ValueError(f"unknown overlap metric {metric!r}")
    return inter / den.clamp(min=1e-12)


def matching_pairs(
    a: torch.Tensor,
    b: torch.Tensor,
    metric: str,
    threshold: float,
    labels_a: torch.Tensor | None = None,
    labels_b: torch.Tensor | None = None,
    same: bool = False,
    chunk: int = 256,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs ``(i, j)`` with ``overlap(a[i], b[j]) >= threshold`` (and > 0), of equal
    labels when labels are given; ``same``: ``b`` is ``a``, self-pairs left out.

    ``a`` is taken in chunks sorted by x1 and each chunk is compared only with the boxes of ``b``
    whose x1 falls in its strip (the widest box of ``b`` wide), so the work follows the number
    of nearby boxes, not the square of all of them.
    """
    empty = torch.zeros(0, dtype=torch.long)
    if not len(a) or not len(b):
        return empty, empty
    order_b = torch.argsort(b[:, 0])
    bx1 = b[order_b, 0].contiguous()
    widest = (b[:, 2] - b[:, 0]).max()
    order_a = torch.argsort(a[:, 0])
    out_i, out_j = [], []
    for s in range(0, len(a), chunk):
        ia = order_a[s : s + chunk]
        ca = a[ia]
        lo = int(torch.searchsorted(bx1, (ca[:, 0].min() - widest).reshape(1)))
        hi = int(torch.searchsorted(bx1, ca[:, 2].max().reshape(1), right=True))
        if hi <= lo:
            continue
        jb = order_b[lo:hi]
        val = overlap_matrix(ca, b[jb], metric)
        ok = (val >= threshold) & (val > 0)
        if labels_a is not None and labels_b is not None:
            ok &= labels_a[ia][:, None] == labels_b[jb][None, :]
        if same:
            ok &= ia[:, None] != jb[None, :]
        r, c = ok.nonzero(as_tuple=True)
        out_i.append(ia[r])
        out_j.append(jb[c])
    if not out_i:
        return empty, empty
    return torch.cat(out_i), torch.cat(out_j)


def greedy_groups(scores: torch.Tensor, pi: torch.Tensor, pj: torch.Tensor) -> list:
    """Greedy walk by descending score: each box not yet taken keeps itself and takes every
    untaken box it matches (``pi[k]`` matches ``pj[k]``). Returns ``[(kept, taken), ...]``."""
    n = len(scores)
    order = np.argsort(-scores.numpy(), kind="stable")
    src, dst = pi.numpy(), pj.numpy()
    srt = np.argsort(src, kind="stable")
    src, dst = src[srt], dst[srt]
    indptr = np.searchsorted(src, np.arange(n + 1))
    taken = np.zeros(n, dtype=bool)
    groups = []
    for i in order:
        if taken[i]:
            continue
        taken[i] = True
        nb = dst[indptr[i] : indptr[i + 1]]
        nb = nb[~taken[nb]]
        taken[nb] = True
        groups.append((int(i), nb))
    return groups


def _group_labels(labels: torch.Tensor, class_agnostic: bool) -> torch.Tensor | None:
    return None if class_agnostic else labels


def nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    metric: str = "iou",
    threshold: float = 0.5,
    class_agnostic: bool = False,
) -> torch.Tensor:
    """Indices of the boxes NMS keeps, best first."""
    if not len(boxes):
        return torch.zeros(0, dtype=torch.long)
    if metric == "iou":
        idxs = torch.zeros_like(labels) if class_agnostic else labels
        return batched_nms(boxes, scores, idxs, threshold)
    lab = _group_labels(labels, class_agnostic)
    pi, pj = matching_pairs(boxes, boxes, metric, threshold, lab, lab, same=True)
    return torch.tensor([i for i, _ in greedy_groups(scores, pi, pj)], dtype=torch.long)


def nmm(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    metric: str = "iou",
    threshold: float = 0.5,
    class_agnostic: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Greedy non-maximum merging: each kept box becomes the union of itself and the boxes it
    absorbed, with its own score and label. Returns ``(boxes, scores, labels)``, best first."""
    if not len(boxes):
        return boxes, scores, labels
    lab = _group_labels(labels, class_agnostic)
    pi, pj = matching_pairs(boxes, boxes, metric, threshold, lab, lab, same=True)
    groups = greedy_groups(scores, pi, pj)
    gid = torch.empty(len(boxes), dtype=torch.long)
    for k, (i, taken) in enumerate(groups):
        gid[i] = k
        gid[torch.from_numpy(taken)] = k
    keep = torch.tensor([i for i, _ in groups], dtype=torch.long)
    out = boxes[keep].clone()
    for c, reduce in ((0, "amin"), (1, "amin"), (2, "amax"), (3, "amax")):
        out[:, c] = out[:, c].scatter_reduce(0, gid, boxes[:, c], reduce=reduce)
    return out, scores[keep], labels[keep]


def _pairwise_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """IoU of ``a[k]`` with ``b[k]`` for every k (0 where both are empty)."""
    wh = (torch.min(a[:, 2:], b[:, 2:]) - torch.max(a[:, :2], b[:, :2])).clamp(min=0)
    inter = wh[:, 0] * wh[:, 1]
    area = (a[:, 2:] - a[:, :2]).clamp(min=0).prod(1) + (b[:, 2:] - b[:, :2]).clamp(min=0).prod(1)
    return inter / (area - inter).clamp(min=1e-12)


def cut_part_pairs(
    boxes: torch.Tensor,
    tiles: torch.Tensor,
    labels: torch.Tensor | None,
    threshold: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs of cut boxes from different tiles that show the same object: both cropped to the
    region their two tiles share, they overlap with IoU >= ``threshold``.

    Two parts of one object agree where both tiles see it, whatever the object's size; the IoU
    of the uncropped parts would depend on how much of the object lies in the overlap.
    """
    pi, pj = matching_pairs(boxes, boxes, "ios", 1e-12, labels, labels, same=True)
    if not len(pi):
        return pi, pj
    ti, tj = tiles[pi], tiles[pj]
    lo, hi = torch.max(ti[:, :2], tj[:, :2]), torch.min(ti[:, 2:], tj[:, 2:])
    bi, bj = boxes[pi], boxes[pj]
    ci = torch.cat([torch.max(bi[:, :2], lo), torch.min(bi[:, 2:], hi)], 1)
    cj = torch.cat([torch.max(bj[:, :2], lo), torch.min(bj[:, 2:], hi)], 1)
    ok = (ti != tj).any(1) & (_pairwise_iou(ci, cj) >= threshold)
    return pi[ok], pj[ok]


def components(n: int, pi: torch.Tensor, pj: torch.Tensor) -> torch.Tensor:
    """Connected-component id (0..C-1) of each of ``n`` nodes joined by the pairs."""
    parent = list(range(n))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for a, b in zip(pi.tolist(), pj.tolist()):
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[ra] = rb
    roots = torch.tensor([find(i) for i in range(n)], dtype=torch.long)
    return torch.unique(roots, return_inverse=True)[1]


def merge_cut_parts(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, tiles: torch.Tensor, spec
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The parts of each object cut by tile borders joined into one box (their union), with
    the best part's score and label (see :func:`cut_part_pairs`)."""
    if not len(boxes):
        return boxes, scores, labels
    lab = _group_labels(labels, spec.class_agnostic)
    pi, pj = cut_part_pairs(boxes, tiles, lab, spec.threshold)
    comp = components(len(boxes), pi, pj)
    n = int(comp.max()) + 1
    out = torch.empty(n, 4, dtype=boxes.dtype)
    for c, reduce in ((0, "amin"), (1, "amin"), (2, "amax"), (3, "amax")):
        out[:, c] = out[:, c].scatter_reduce(
            0, comp, boxes[:, c], reduce=reduce, include_self=False
        )
    by_score = torch.argsort(scores, descending=True, stable=True)
    grouped = by_score[torch.argsort(comp[by_score], stable=True)]  # by component, best first
    counts = torch.bincount(comp, minlength=n)
    best = grouped[torch.cumsum(counts, 0) - counts]
    return out, scores[best], labels[best]


def merge_detections(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    cut: torch.Tensor,
    tiles: torch.Tensor,
    spec: SliceSpec,
) -> dict[str, torch.Tensor]:
    """One image's tile (and whole-image) detections merged as ``spec`` says. ``cut`` marks the
    boxes touching an internal border of the tile they came from, ``tiles`` holds that tile
    (``x0, y0, x1, y1`` per box; see the module docstring). Best first."""
    whole = ~cut
    b, s, lab = boxes[whole], scores[whole], labels[whole]
    if spec.merge == "nms":
        keep = nms(b, s, lab, spec.metric, spec.threshold, spec.class_agnostic)
        b, s, lab = b[keep], s[keep], lab[keep]
    else:
        b, s, lab = nmm(b, s, lab, spec.metric, spec.threshold, spec.class_agnostic)
    if bool(cut.any()):
        cb, cs, cl, ct = boxes[cut], scores[cut], labels[cut], tiles[cut]
        ga, gb = _group_labels(cl, spec.class_agnostic), _group_labels(lab, spec.class_agnostic)
        pi, _ = matching_pairs(cb, b, "cover", spec.cut_cover, ga, gb)
        rest = torch.ones(len(cb), dtype=torch.bool)
        rest[pi] = False  # found whole elsewhere
        mb, ms, ml = merge_cut_parts(cb[rest], cs[rest], cl[rest], ct[rest], spec)
        b, s, lab = torch.cat([b, mb]), torch.cat([s, ms]), torch.cat([lab, ml])
    order = torch.argsort(s, descending=True, stable=True)
    return {"boxes": b[order], "scores": s[order], "labels": lab[order]}


# ---------------------------------------------------------------------------------- the model


def _as_uint8(image: torch.Tensor) -> torch.Tensor:
    """uint8 as given; a float image in [0, 1] (a dataset sample) back to the uint8 it came
    from, so that resizing happens on the same values as in the data pipeline."""
    if image.dtype == torch.uint8:
        return image
    return (image.detach().float().cpu() * 255).round().clamp(0, 255).to(torch.uint8)


def _forward(model: nn.Module, batch: Sequence[torch.Tensor], device: torch.device) -> list:
    x = [F.to_dtype(t.to(device), torch.float32, scale=True) for t in batch]
    return model(x)


def _cpu(out: dict, factor: torch.Tensor, shift: torch.Tensor | None = None) -> dict:
    boxes = out["boxes"].detach().float().cpu() * factor
    if shift is not None:
        boxes = boxes + shift
    return {
        "boxes": boxes,
        "scores": out["scores"].detach().float().cpu(),
        "labels": out["labels"].detach().cpu(),
    }


def _device(model: nn.Module, device) -> torch.device:
    return torch.device(device) if device is not None else next(model.parameters()).device


@torch.inference_mode()
def predict_whole(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    device=None,
    test_size: SizeFn | None = None,
    batch_size: int = 1,
) -> list[dict[str, torch.Tensor]]:
    """Detections of whole images (``3 x H x W``, uint8 or float in [0, 1]) in their own
    pixels; ``test_size`` is the resize the config's test pipeline applies (None: none)."""
    device = _device(model, device)
    results = []
    for s in range(0, len(images), batch_size):
        batch, factors = [], []
        for im in images[s : s + batch_size]:
            im = _as_uint8(im)
            h, w = int(im.shape[-2]), int(im.shape[-1])
            nh, nw = test_size(h, w) if test_size is not None else (h, w)
            if (nh, nw) != (h, w):
                im = F.resize(im, [nh, nw], antialias=True)
            batch.append(im)
            factors.append(torch.tensor([w / nw, h / nh, w / nw, h / nh]))
        for out, f in zip(_forward(model, batch, device), factors):
            results.append(_cpu(out, f))
    return results


@torch.inference_mode()
def predict_sliced(
    model: nn.Module,
    images: Sequence[torch.Tensor],
    spec: SliceSpec,
    device=None,
    test_size: SizeFn | None = None,
) -> list[dict[str, torch.Tensor]]:
    """Detections of each image from its tiles (all images' tiles pooled into batches of
    ``spec.batch_size``), merged as ``spec`` says, in the images' own pixels."""
    device = _device(model, device)
    images = [_as_uint8(im) for im in images]
    jobs = [
        (k, tile)
        for k, im in enumerate(images)
        for tile in tile_grid(int(im.shape[-2]), int(im.shape[-1]), spec.size, spec.overlap)
    ]
    parts: list[list[tuple]] = [[] for _ in images]
    for s in range(0, len(jobs), spec.batch_size):
        chunk = jobs[s : s + spec.batch_size]
        crops = []
        for k, (x0, y0, x1, y1) in chunk:
            crop = images[k][:, y0:y1, x0:x1]
            if spec.scale != 1:
                size = [
                    max(1, round((y1 - y0) * spec.scale)),
                    max(1, round((x1 - x0) * spec.scale)),
                ]
                crop = F.resize(crop, size, antialias=True)
            crops.append(crop)
        for (k, tile), crop, out in zip(chunk, crops, _forward(model, crops, device)):
            x0, y0, x1, y1 = tile
            fx, fy = (x1 - x0) / crop.shape[-1], (y1 - y0) / crop.shape[-2]
            det = _cpu(out, torch.tensor([fx, fy, fx, fy]), torch.tensor([x0, y0, x0, y0]))
            h, w = int(images[k].shape[-2]), int(images[k].shape[-1])
            cut = cut_mask(det["boxes"], tile, h, w, spec.edge_margin)
            where = torch.tensor(tile, dtype=torch.float32).expand(len(cut), 4)
            parts[k].append((det["boxes"], det["scores"], det["labels"], cut, where))
    if spec.full_image:
        several = [k for k, p in enumerate(parts) if len(p) > 1]  # one tile = the image already
        whole = predict_whole(model, [images[k] for k in several], device, test_size)
        for k, det in zip(several, whole):
            n = len(det["boxes"])
            h, w = int(images[k].shape[-2]), int(images[k].shape[-1])
            where = torch.tensor([0.0, 0.0, w, h]).expand(n, 4)
            parts[k].append(
                (
                    det["boxes"],
                    det["scores"],
                    det["labels"],
                    torch.zeros(n, dtype=torch.bool),
                    where,
                )
            )
    merged = []
    for p in parts:
        boxes, scores, labels, cut, tiles = (torch.cat([q[i] for q in p]) for i in range(5))
        merged.append(merge_detections(boxes, scores, labels, cut, tiles, spec))
    return merged


def config_test_size(cfg) -> SizeFn | None:
    """The resize of the config's test pipeline (``data.transforms.test_scale``), or None."""
    from detector.data.transforms import ResizeShortSide

    t = cfg["data"]["transforms"]
    if not t.get("test_scale"):
        return None
    return ResizeShortSide([t["test_scale"]], (1.0, 1.0), t.get("max_size", 0)).target_size


def make_forward(
    model: nn.Module, cfg, spec: SliceSpec | None = None, device=None, batch_size: int = 1
) -> Callable[[Sequence[torch.Tensor]], list[dict]]:
    """``images -> detections`` in the images' own pixels: sliced with ``spec``, else whole
    images through the config's test resize."""
    size = config_test_size(cfg)
    if spec is None:
        return lambda images: predict_whole(model, images, device, size, batch_size)
    return lambda images: predict_sliced(model, images, spec, device, size)
