"""Reading the images a user points ``smalldet predict`` at: folders, globs or files of any
format PIL reads, turned into the RGB pixels the model was trained on.

Photos and scans come in many shapes: a phone JPEG stores its rotation in EXIF (the pixels are
sideways until it is applied), a scanner writes grayscale or 16-bit TIFF, a screenshot has an
alpha channel. :func:`read_image` honours the EXIF orientation, converts grayscale, palette,
CMYK and RGBA to RGB (the alpha channel is dropped, as the training images had none) and
scales 16-bit and float images to 8 bits by their value range, not by the image's own
maximum, so that two exposures of one scene keep their relative brightness.

:func:`list_images` expands the inputs into ``(path, name)`` pairs; ``name`` (the path relative
to the folder or glob root given, or the bare file name) is the ``file_name`` written to the
results, so that they match a COCO ground truth whose ``file_name`` fields are relative to the
same image root.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from .validation import DatasetError

MAGIC = set("*?[")


class ImageReadError(DatasetError):
    """An image file that cannot be decoded; the message names the file."""


class ImageInputError(DatasetError):
    """An input argument that names no image (a missing path, an empty folder or glob)."""


@dataclass(frozen=True)
class ImageEntry:
    """One image to predict: where it is and the ``file_name`` it gets in the results."""

    path: Path
    name: str


def image_suffixes() -> set[str]:
    """Every file suffix PIL has a decoder for (``.jpg``, ``.png``, ``.tif``, ...)."""
    Image.init()
    return {ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN}


def _to_8bit(arr: np.ndarray, mode: str) -> np.ndarray:
    """16-bit integers by the 16-bit range (32-bit ones beyond it by their maximum); floats
    in [0, 1] by 255, larger floats by their maximum."""
    arr = arr.astype(np.float64)
    if mode == "F":
        top = 1.0 if arr.size == 0 or float(np.nanmax(arr)) <= 1.0 else float(np.nanmax(arr))
    else:
        top = 65535.0 if arr.size == 0 or arr.max() <= 65535 else float(arr.max())
    out = np.nan_to_num(arr / max(top, 1e-12) * 255.0, nan=0.0)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def to_rgb(im: Image.Image) -> Image.Image:
    """``im`` upright (EXIF orientation applied) as 8-bit RGB."""
    im = ImageOps.exif_transpose(im) or im
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        gray = _to_8bit(np.asarray(im), "F" if mode == "F" else "I")
        return Image.fromarray(gray).convert("RGB")
    if mode in ("P", "PA", "LA", "La", "RGBa"):
        im = im.convert("RGBA")
    return im if im.mode == "RGB" else im.convert("RGB")


def read_image(path: str | Path) -> torch.Tensor:
    """The image at ``path`` as a ``3 x H x W`` uint8 RGB tensor (see :func:`to_rgb`).

    Any decoding failure (a truncated or corrupt file, an unknown format, a decompression bomb)
    raises :class:`ImageReadError` naming the file and the reason.
    """
    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            rgb = to_rgb(im)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: file not found") from None
    except Exception as err:  # noqa: BLE001 - PIL raises many types for bad data
        raise ImageReadError(
            f"{path}: cannot read the image ({type(err).__name__}: {err}). Fix: re-encode or "
            "replace the file, or leave it out"
        ) from None
    arr = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def _glob_root(pattern: str) -> Path:
    """The folder part of a glob pattern before its first wildcard."""
    parts = Path(pattern).parts
    head: list[str] = []
    for part in parts:
        if MAGIC & set(part):
            break
        head.append(part)
    return Path(*head) if head else Path(".")


def _hidden(rel: Path) -> bool:
    return any(p.startswith(".") for p in rel.parts)


def _inside(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder)
    except ValueError:
        return False
    return True


def list_images(inputs: list[str], exclude: str | Path | None = None) -> list[ImageEntry]:
    """Expand files, folders (recursively, image suffixes only, hidden entries skipped) and
    globs into image entries in a stable order.

    A file given by name is taken whatever its suffix (PIL decides when reading). Files under
    ``exclude`` (the output folder) are never taken. An input that matches nothing, or two
    inputs that would give the same ``file_name``, raise :class:`ImageInputError`.
    """
    suffixes = image_suffixes()
    skip = Path(exclude).resolve() if exclude is not None else None
    entries: list[ImageEntry] = []
    for text in inputs:
        p = Path(text)
        if p.is_dir():
            found = [
                f
                for f in sorted(p.rglob("*"))
                if f.is_file()
                and f.suffix.lower() in suffixes
                and not _hidden(f.relative_to(p))
                and not _inside(f, skip)
            ]
            if not found:
                raise ImageInputError(
                    f"{p}: no image files in this folder (looked for {', '.join(sorted(suffixes)[:8])}, "
                    "...). Fix: point at the folder that holds the images"
                )
            entries += [ImageEntry(f, f.relative_to(p).as_posix()) for f in found]
        elif p.is_file():
            entries.append(ImageEntry(p, p.name))
        elif MAGIC & set(text):
            root = _glob_root(text)
            found = [
                Path(f)
                for f in sorted(glob.glob(text, recursive=True))
                if os.path.isfile(f) and not _inside(Path(f), skip)
            ]
            if not found:
                raise ImageInputError(f"{text}: the pattern matches no file. Fix: check it")
            entries += [ImageEntry(f, f.relative_to(root).as_posix()) for f in found]
        else:
            raise ImageInputError(
                f"{text}: no such file or folder. Fix: give image files, folders or globs"
            )
    seen: dict[str, Path] = {}
    for e in entries:
        if e.name in seen and seen[e.name].resolve() != e.path.resolve():
            raise ImageInputError(
                f"{seen[e.name]} and {e.path} would both be written as file_name {e.name!r}. "
                "Fix: predict them in separate runs, or give their common parent folder"
            )
        seen[e.name] = e.path
    unique: dict[str, ImageEntry] = {}
    for e in entries:
        unique.setdefault(e.name, e)
    return list(unique.values())
