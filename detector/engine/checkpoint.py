"""Atomic checkpoints, keep-last-K, and loading that explains what is wrong.

A training checkpoint is a dict of ``weights_only``-safe values::

    {"format": "smalldet-checkpoint", "version": 1, "iteration": int, "model": state_dict,
     "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": [per-rank states],
     "data": {"start_batch": int}, "best": {...}, "config": dict, "fingerprint": str}

``model_final.pth`` and ``model_best.pth`` hold the model's state dict alone (plus nothing
else), so they load anywhere with ``torch.load(..., weights_only=True)``;
:func:`load_model_weights` accepts either form.

Every file is written to a temporary file in the same directory, flushed, fsynced and renamed
over the target, and then the directory is fsynced: a crash leaves either the old file or the
new one, never half of one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "smalldet-checkpoint"
LAST_POINTER = "last_checkpoint"
CKPT_RE = re.compile(r"^model_(\d{7})\.pth$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, truncated, corrupt or from another config."""


# ------------------------------------------------------------------------------ fingerprint


def model_signature(cfg) -> dict:
    """The config keys that decide the shapes of the model's weights."""
    m = cfg["model"]
    b = m["backbone"]
    return {
        "variant": m["variant"],
        "num_classes": m["num_classes"],
        "depth": b["depth"],
        "norm": "bn" if b["norm"] in ("bn", "syncbn", "frozen_bn") else b["norm"],
        "gn_groups": b["gn_groups"] if b["norm"] == "gn" else None,
        "reduce_channels": b["reduce_channels"],
        "fpn_channels": b["fpn_channels"] if m["variant"] == "fpn" else None,
        "num_anchor_sizes": len(m["anchors"]["sizes"]),
        "num_aspect_ratios": len(m["anchors"]["aspect_ratios"]),
        "roi_output_size": m["roi"]["output_size"],
        "representation_size": m["roi"]["representation_size"],
    }


def config_fingerprint(cfg, num_classes: int | None = None) -> str:
    """A short hash of :func:`model_signature` (with the resolved class count)."""
    sig = model_signature(cfg)
    if num_classes is not None:
        sig["num_classes"] = int(num_classes)
    blob = json.dumps(sig, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def signature_diff(a: dict, b: dict) -> list[str]:
    return [
        f"{k}: {a.get(k)!r} vs {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


# ---------------------------------------------------------------------------------- saving


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def _atomic_file(path: str | Path):
    """A binary file that appears at ``path`` only once fully written and fsynced (a temporary
    file in the same folder, then ``os.replace``); on any error the old file stays intact."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_bytes(data: bytes, path: str | Path) -> None:
    with _atomic_file(path) as f:
        f.write(data)


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through a temporary file, fsync and rename."""
    with _atomic_file(path) as f:
        torch.save(obj, f)


class CheckpointManager:
    """Writes ``model_<iter>.pth`` files, keeps the last ``keep_last``, tracks the latest."""

    def __init__(self, directory: str | Path, keep_last: int = 3):
        self.dir = Path(directory)
        self.keep_last = keep_last

    def path_for(self, iteration: int) -> Path:
        return self.dir / f"model_{iteration:07d}.pth"

    def save(self, state: dict, iteration: int) -> Path:
        self.dir.mkdir(parents=True, exist_ok=True)
        path = self.path_for(iteration)
        atomic_save(state, path)
        atomic_write_bytes(path.name.encode() + b"\n", self.dir / LAST_POINTER)
        self.prune()
        return path

    def all_checkpoints(self) -> list[Path]:
        found = [p for p in self.dir.glob("model_*.pth") if CKPT_RE.match(p.name)]
        return sorted(found, key=lambda p: int(CKPT_RE.match(p.name).group(1)))

    def prune(self) -> None:
        if self.keep_last <= 0:
            return
        for old in self.all_checkpoints()[: -self.keep_last]:
            old.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The checkpoint named by ``last_checkpoint``, else the highest-numbered one."""
        pointer = self.dir / LAST_POINTER
        if pointer.is_file():
            cand = self.dir / pointer.read_text().strip()
            if cand.is_file():
                return cand
        found = self.all_checkpoints()
        return found[-1] if found else None


# --------------------------------------------------------------------------------- loading


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> Any:
    """``torch.load(weights_only=True)`` with a clear error for missing/truncated/corrupt files."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): the file was truncated")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for bad archives
        text = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "Weights only load failed" in str(err):
            raise CheckpointError(
                f"checkpoint {path} holds objects that are not safe to load with "
                f"weights_only=True (only tensors and plain containers are accepted): {text}"
            ) from None
        raise CheckpointError(
            f"checkpoint {path} ({size} bytes) is corrupt or truncated and cannot be read: "
            f"{text}. Point --checkpoint at another file, or, for --resume, delete this one to continue "
            "from the previous checkpoint."
        ) from None


def is_training_checkpoint(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("format") == FORMAT and "model" in obj


def extract_state_dict(obj: Any, path: str | Path = "checkpoint") -> dict:
    """The model state dict from a training checkpoint or a bare state dict."""
    if (
        is_training_checkpoint(obj)
        or isinstance(obj, dict)
        and "model" in obj
        and isinstance(obj["model"], dict)
    ):
        sd = obj["model"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        raise CheckpointError(
            f"{path}: neither a smalldet training checkpoint nor a model state dict "
            f"(got {type(obj).__name__}"
            + (f" with keys {sorted(obj)[:8]}" if isinstance(obj, dict) else "")
            + ")"
        )
    if any(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def check_fingerprint(obj: Any, cfg, num_classes: int | None, path: str | Path) -> None:
    """Refuse a training checkpoint whose model-shaping config differs from ``cfg``."""
    if not is_training_checkpoint(obj) or cfg is None:
        return
    want = config_fingerprint(cfg, num_classes)
    have = obj.get("fingerprint")
    if have is None or have == want:
        return
    theirs = obj.get("signature") or {}
    ours = model_signature(cfg)
    if num_classes is not None:
        ours["num_classes"] = int(num_classes)
    diff = "; ".join(signature_diff(theirs, ours)) or "fingerprint differs"
    raise CheckpointError(
        f"checkpoint {path} was written by a different model config "
        f"(checkpoint vs current: {diff}). Use the config the run was trained with "
        "(its config.yaml in the run directory)."
    )


def load_model_weights(
    model: nn.Module, path: str | Path, cfg=None, num_classes: int | None = None
) -> Any:
    """Load a full training checkpoint or a bare state dict into ``model``; returns the object."""
    obj = load_checkpoint(path)
    check_fingerprint(obj, cfg, num_classes, path)
    sd = extract_state_dict(obj, path)
    target = model.module if hasattr(model, "module") else model
    try:
        target.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()][:6]
        raise CheckpointError(
            f"checkpoint {path} does not fit this model (is it from another config?): "
            + " | ".join(lines)
        ) from None
    return obj
