"""The built-in synthetic small-object dataset: PNG images plus COCO JSON, generated on demand.

What it contains (all deterministic for a given seed, byte for byte):

* five classes told apart by **shape**, not colour: circle, square, triangle, cross (plus) and
  ring; every object gets a random colour from the same distribution, whatever its class;
* object sizes drawn from ``size_mix`` (a list of ``(lo, hi, weight)`` in pixels of box side =
  sqrt(area)), by default heavily skewed to small: 4-8, 8-16 and 16-32 px make up ~85%;
  within a bin the side is log-uniform, on a quarter-pixel grid;
* textured, cluttered backgrounds: a colour gradient, low-frequency blotches, pixel noise, and
  distractors that belong to no class (lines, stars, thin ellipse slivers, hollow frames, blobs);
* dense clusters of touching small objects, and partial occlusion: objects drawn later may
  cover up to half of the box of an earlier one.

Annotation conventions: ``bbox`` is the **full** (amodal) extent of the shape, also when it is
partly occluded; every shape fills its square box, so ``area = w*h = side**2``. Shapes are
drawn at 4x and box-filtered down, so edges are anti-aliased like real small objects.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import uuid
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm

from detector.utils.files import atomic_write_json

CLASSES = ("circle", "square", "triangle", "cross", "ring")
DEFAULT_SIZE_MIX: tuple[tuple[float, float, float], ...] = (
    (4, 8, 0.30),
    (8, 16, 0.32),
    (16, 32, 0.23),
    (32, 64, 0.11),
    (64, 128, 0.04),
)
GENERATOR_VERSION = 3  # bump when the output changes, so cached copies are regenerated
SS = 4  # supersampling factor of the drawing canvas
MAX_OCCLUSION = 0.5  # an object's box is never covered by more than this fraction


def _sample_sides(rng: np.random.Generator, n: int, size_mix, image_size: int) -> list[float]:
    weights = np.array([w for _, _, w in size_mix], dtype=np.float64)
    weights = weights / weights.sum()
    which = rng.choice(len(size_mix), size=n, p=weights)
    sides = []
    for k in which:
        lo, hi, _ = size_mix[k]
        hi = min(hi, image_size / 2)
        lo = min(lo, hi)
        s = math.exp(rng.uniform(math.log(lo), math.log(hi)))
        q = round(s * 4) / 4
        # keep the side inside (lo, hi] (or [lo, hi] for the first bin) so bins are exact
        if q <= lo and k > 0:
            q = lo + 0.25
        q = min(max(q, lo), hi)
        sides.append(float(q))
    return sides


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A float HxWx3 textured background in [0, 255]."""
    c0 = rng.uniform(30, 225, 3)
    c1 = rng.uniform(30, 225, 3)
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64) / max(1, size - 1)
    t = np.cos(ang) * xx + np.sin(ang) * yy
    t = (t - t.min()) / max(1e-9, t.max() - t.min())
    img = c0[None, None] * (1 - t[..., None]) + c1[None, None] * t[..., None]
    for cells, amp in ((4, 30.0), (16, 18.0)):
        small = rng.normal(0, 1, (cells, cells, 3))
        small = ((small - small.min()) / max(1e-9, np.ptp(small)) * 255).astype(np.uint8)
        up = np.asarray(
            Image.fromarray(small).resize((size, size), Image.BICUBIC), dtype=np.float64
        )
        img += (up - 127.5) / 127.5 * amp
    return np.clip(img, 0, 255)


def _rand_colour(rng: np.random.Generator, ref: np.ndarray) -> tuple[int, int, int]:
    """A random colour whose luminance differs from ``ref`` enough to be visible."""
    lum_ref = float(ref @ np.array([0.299, 0.587, 0.114]))
    for _ in range(20):
        c = rng.integers(0, 256, 3)
        if abs(float(c @ np.array([0.299, 0.587, 0.114])) - lum_ref) >= 45:
            break
    else:
        c = np.where(ref > 127, 20, 235)
    return tuple(int(v) for v in c)


def _star(cx, cy, r_out, r_in, rot, points=5):
    pts = []
    for k in range(2 * points):
        r = r_out if k % 2 == 0 else r_in
        a = rot + k * math.pi / points
        pts.append((cx + r * math.cos(a), cy + r * math.sin(a)))
    return pts


def _ellipse_poly(cx, cy, a, b, rot, n=24):
    return [
        (
            cx + a * math.cos(t) * math.cos(rot) - b * math.sin(t) * math.sin(rot),
            cy + a * math.cos(t) * math.sin(rot) + b * math.sin(t) * math.cos(rot),
        )
        for t in np.linspace(0, 2 * math.pi, n, endpoint=False)
    ]


def _draw_distractors(rng, draw: ImageDraw.ImageDraw, size: int, count: int) -> None:
    S = size * SS
    for _ in range(count):
        kind = rng.choice(["line", "star", "sliver", "frame", "blob", "line"])
        col = tuple(int(v) for v in rng.integers(0, 256, 3))
        cx, cy = rng.uniform(0, S, 2)
        if kind == "line":
            length = rng.uniform(10, size * 0.6) * SS
            a = rng.uniform(0, math.pi)
            draw.line(
                [(cx, cy), (cx + length * math.cos(a), cy + length * math.sin(a))],
                fill=col,
                width=int(rng.integers(1, 3)) * SS,
            )
        elif kind == "star":
            r = rng.uniform(3, 24) * SS
            draw.polygon(_star(cx, cy, r, r * 0.45, rng.uniform(0, math.pi)), fill=col)
        elif kind == "sliver":
            a = rng.uniform(4, 30) * SS
            draw.polygon(
                _ellipse_poly(cx, cy, a, a / rng.uniform(4, 8), rng.uniform(0, math.pi)), fill=col
            )
        elif kind == "frame":
            s = rng.uniform(6, 30) * SS
            draw.rectangle([cx, cy, cx + s, cy + s * rng.uniform(0.5, 2.0)], outline=col, width=SS)
        else:  # blob: a large soft-coloured irregular patch
            r = rng.uniform(10, 40) * SS * rng.uniform(0.5, 1.5, 9)
            a = np.linspace(0, 2 * math.pi, 9, endpoint=False)
            draw.polygon(
                [(cx + ri * math.cos(ai), cy + ri * math.sin(ai)) for ri, ai in zip(r, a)], fill=col
            )


def _draw_object(
    draw: ImageDraw.ImageDraw, cls: int, x: float, y: float, s: float, col, rng
) -> None:
    X0, Y0 = round(x * SS), round(y * SS)
    X1, Y1 = round((x + s) * SS) - 1, round((y + s) * SS) - 1
    name = CLASSES[cls]
    if name == "circle":
        draw.ellipse([X0, Y0, X1, Y1], fill=col)
    elif name == "square":
        draw.rectangle([X0, Y0, X1, Y1], fill=col)
    elif name == "triangle":
        d = int(rng.integers(4))
        xm, ym = (X0 + X1) / 2, (Y0 + Y1) / 2
        pts = [
            [(xm, Y0), (X1, Y1), (X0, Y1)],
            [(X0, Y0), (X1, Y0), (xm, Y1)],
            [(X0, Y0), (X1, ym), (X0, Y1)],
            [(X1, Y0), (X1, Y1), (X0, ym)],
        ][d]
        draw.polygon(pts, fill=col)
    elif name == "cross":
        t = (X1 - X0 + 1) / 3
        draw.rectangle([X0 + t, Y0, X1 - t, Y1], fill=col)
        draw.rectangle([X0, Y0 + t, X1, Y1 - t], fill=col)
    else:  # ring
        width = max(SS, round(s * SS / 4))
        draw.ellipse([X0, Y0, X1, Y1], outline=col, width=width)


def _inter(a, b) -> float:
    w = min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0])
    h = min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1])
    return max(0.0, w) * max(0.0, h)


def _fits(box, placed: list, covered: list) -> bool:
    """True if ``box`` drawn on top leaves every placed box at most MAX_OCCLUSION covered."""
    for j, p in enumerate(placed):
        inter = _inter(box, p)
        if inter > 0 and covered[j] + inter > MAX_OCCLUSION * p[2] * p[3]:
            return False
    return True


def make_image(
    rng: np.random.Generator,
    image_size: int,
    *,
    size_mix=DEFAULT_SIZE_MIX,
    objects_per_image: tuple[int, int] = (8, 30),
    cluster_prob: float = 0.5,
    empty_prob: float = 0.03,
    distractors: tuple[int, int] = (12, 30),
) -> tuple[np.ndarray, list[tuple[int, list[float]]]]:
    """One image (HxWx3 uint8) and its objects ``[(class_index, [x, y, w, h]), ...]``.

    Object and distractor counts are per 256x256 px and scale with the image area (at least
    one object in a non-empty image).
    """
    size = int(image_size)
    scale = (size / 256) ** 2
    bg = _background(rng, size)
    canvas = Image.fromarray(bg.astype(np.uint8)).resize((size * SS, size * SS), Image.BILINEAR)
    draw = ImageDraw.Draw(canvas)
    n_dis = int(rng.integers(distractors[0], distractors[1] + 1) * scale)
    _draw_distractors(rng, draw, size, n_dis)

    n_obj = (
        0
        if rng.random() < empty_prob
        else max(1, int(rng.integers(objects_per_image[0], objects_per_image[1] + 1) * scale))
    )
    sides = sorted(_sample_sides(rng, n_obj, size_mix, size), reverse=True)
    # plan: large objects first, then clusters of small touching objects, then the rest
    plan: list[tuple[float, float, float]] = []  # (x, y, side) proposals or NaN = random place
    small = [s for s in sides if s <= 16]
    big = [s for s in sides if s > 16]
    clusters: list[list[float]] = []
    if small and rng.random() < cluster_prob:
        for _ in range(int(rng.integers(1, 3))):
            k = min(len(small), int(rng.integers(4, 13)))
            if k < 3:
                break
            clusters.append(small[:k])
            small = small[k:]
    for s in big:
        plan.append((math.nan, math.nan, s))
    for members in clusters:
        cell = max(members) + float(rng.integers(0, 2))
        cols = int(rng.integers(2, 5))
        rows = math.ceil(len(members) / cols)
        ox = rng.uniform(0, max(0.0, size - cols * cell))
        oy = rng.uniform(0, max(0.0, size - rows * cell))
        for k, s in enumerate(members):
            r, c = divmod(k, cols)
            jitter = (cell - s) / 2
            plan.append(
                (
                    round((ox + c * cell + jitter) * 4) / 4,
                    round((oy + r * cell + jitter) * 4) / 4,
                    s,
                )
            )
    for s in small:
        plan.append((math.nan, math.nan, s))

    placed: list[list[float]] = []
    covered: list[float] = []
    objects = []
    for x, y, s in plan:
        for attempt in range(41):
            if attempt == 0:
                if math.isnan(x):
                    continue
                cx, cy = x, y
            else:
                cx, cy = (round(float(v) * 4) / 4 for v in rng.uniform(0, size - s, 2))
            box = [float(cx), float(cy), s, s]
            if cx < 0 or cy < 0 or cx + s > size or cy + s > size:
                continue
            if _fits(box, placed, covered):
                for j, p in enumerate(placed):
                    covered[j] += _inter(box, p)
                placed.append(box)
                covered.append(0.0)
                cls = int(rng.integers(len(CLASSES)))
                ref = bg[int(cy + s / 2), int(cx + s / 2)]
                _draw_object(draw, cls, cx, cy, s, _rand_colour(rng, ref), rng)
                objects.append((cls, box))
                break
    small_img = canvas.reduce(SS)
    arr = np.asarray(small_img, dtype=np.float64) + rng.normal(0, 6.0, (size, size, 3))
    return np.clip(np.round(arr), 0, 255).astype(np.uint8), objects


def generate_dataset(
    out_dir: str | Path,
    num_images: int,
    image_size: int = 256,
    seed: int = 0,
    *,
    salt: int = 0,
    size_mix=DEFAULT_SIZE_MIX,
    objects_per_image: tuple[int, int] = (8, 30),
    cluster_prob: float = 0.5,
    empty_prob: float = 0.03,
    progress: str = "",
) -> tuple[Path, Path]:
    """Write ``out_dir/images/*.png`` and ``out_dir/annotations.json``; return both paths.

    Image ``i`` depends only on ``(seed, salt, i)``: the train and val splits use salts 0 and 1.
    ``progress``: a tqdm bar with this description (generation takes minutes on a small CPU,
    which would otherwise pass in silence); "" = none.
    """
    out = Path(out_dir)
    img_dir = out / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    steps = range(int(num_images))
    if progress:
        steps = tqdm(steps, desc=progress, unit="img", dynamic_ncols=True, leave=False)
    for i in steps:
        rng = np.random.default_rng(
            np.random.SeedSequence([int(seed), int(salt), i, GENERATOR_VERSION])
        )
        arr, objects = make_image(
            rng,
            image_size,
            size_mix=size_mix,
            objects_per_image=objects_per_image,
            cluster_prob=cluster_prob,
            empty_prob=empty_prob,
        )
        name = f"{i:06d}.png"
        Image.fromarray(arr).save(img_dir / name, format="PNG", compress_level=6)
        images.append(
            {"id": i + 1, "file_name": name, "width": int(image_size), "height": int(image_size)}
        )
        for cls, box in objects:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i + 1,
                    "category_id": cls + 1,
                    "bbox": box,
                    "area": box[2] * box[3],
                    "iscrowd": 0,
                }
            )
    data = {
        "info": {
            "description": "smalldet built-in synthetic small-object dataset",
            "generator_version": GENERATOR_VERSION,
            "seed": int(seed),
            "salt": int(salt),
            "image_size": int(image_size),
            "size_mix": [list(m) for m in size_mix],
        },
        "images": images,
        "annotations": anns,
        "categories": [
            {"id": k + 1, "name": n, "supercategory": "shape"} for k, n in enumerate(CLASSES)
        ],
    }
    ann_path = out / "annotations.json"
    atomic_write_json(data, ann_path, indent=None, sort_keys=True)
    return img_dir, ann_path


def builtin_params(cfg) -> dict:
    b = cfg.data.builtin
    return {
        "num_train": int(b.num_train),
        "num_val": int(b.num_val),
        "image_size": int(b.image_size),
        "seed": int(b.seed),
        "version": GENERATOR_VERSION,
    }


def builtin_paths(cfg, generate: bool = True, progress: bool | None = None) -> dict:
    """Paths of the built-in dataset for ``cfg.data.builtin``, generating it on first use
    (``generate=False``: raise ``FileNotFoundError`` instead, for read-only callers).

    It lives in ``cache_dir/builtin-<hash of its params>``. Generation goes to a private temp
    dir renamed into place atomically, so concurrent callers (DDP ranks) are safe: a loser of
    the race discards its copy and uses the winner's. ``progress`` (default
    ``cfg.log.progress``) shows a bar per split while generating.
    """
    params = builtin_params(cfg)
    key = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    cache = Path(cfg.data.builtin.cache_dir)
    final = cache / f"builtin-{key}"
    if not (final / "params.json").is_file():
        if not generate:
            raise FileNotFoundError(f"the built-in dataset is not generated yet: {final}")
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f".tmp-builtin-{key}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        if progress is None:
            log = getattr(cfg, "log", None)
            progress = bool(log.get("progress", True)) if isinstance(log, dict) else True
        size, seed = params["image_size"], params["seed"]
        try:
            for split, n, salt in (
                ("train", params["num_train"], 0),
                ("val", params["num_val"], 1),
            ):
                desc = (
                    f"generating the built-in {split} set (cached for later runs)"
                    if progress
                    else ""
                )
                generate_dataset(tmp / split, n, size, seed, salt=salt, progress=desc)
            atomic_write_json(params, tmp / "params.json", sort_keys=True)
            try:
                os.rename(tmp, final)
            except OSError:
                if not (final / "params.json").is_file():
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return {
        "train_images": str(final / "train" / "images"),
        "train_ann": str(final / "train" / "annotations.json"),
        "val_images": str(final / "val" / "images"),
        "val_ann": str(final / "val" / "annotations.json"),
    }
