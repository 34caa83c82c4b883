"""Atomic checkpoints, keep-last-K, and loading that explains what is wrong.

A training checkpoint is a dict of ``weights_only``-safe values::

    {"format": "smalldet-checkpoint", "version": 1, "iteration": int, "model": state_dict,
     "optimizer": ..., "scheduler": ..., "scaler": ..., "rng": [per-rank states],
     "data": {"start_batch": int}, "best": {...}, "config": dict, "fingerprint": str,
     "signature": dict}

``model_final.pth`` and ``model_best.pth`` are model files (:func:`model_file`)::

    {"format": "smalldet-model", "version": 1, "model": state_dict, "fingerprint": str,
     "signature": dict, "config": dict, "iteration": int}

so that evaluating them under a config with another architecture is refused with the diff,
exactly like a training checkpoint. Both load with ``torch.load(..., weights_only=True)``;
:func:`load_model_weights` and :func:`extract_state_dict` also accept a bare state dict (older
runs, torchvision-style files), which carries no fingerprint and is only checked by shape.

Every file is written to a temporary file in the same directory, flushed, fsynced and renamed
over the target, and then the directory is fsynced: a crash leaves either the old file or the
new one, never half of one. A write that fails (a full disk) leaves the previous checkpoint
intact and says so.
"""

from __future__ import annotations

import errno
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from detector.utils.errors import SmalldetError
from detector.utils.files import atomic_file, atomic_write_bytes

FORMAT = "smalldet-checkpoint"
MODEL_FORMAT = "smalldet-model"
LAST_POINTER = "last_checkpoint"
CKPT_RE = re.compile(r"^model_(\d{7})\.pth$")


class CheckpointError(SmalldetError, RuntimeError):
    """A checkpoint that cannot be used: missing, truncated, corrupt or from another config."""


# ------------------------------------------------------------------------------ fingerprint


# blocks per stage and 3x3 convs per block of the torchvision ResNets (as built by
# detector.models.backbone; tests/test_engine_checkpoint.py checks the two agree)
_RESNET_BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}


def resolved_dilations(cfg) -> dict:
    """The per-3x3-conv dilation rates of every dilated stage, as the backbone builds them.

    ``{}`` for a plain ResNet; a c5 and a dc5 checkpoint have the same shapes, so only the
    rates tell them apart. Rates the backbone would refuse are returned as configured. With
    ``model.trident.enabled`` the trident stage holds one list per branch (its rates times each
    of ``branch_rates``): a trident has dc5's shapes, so this is what tells them apart.
    """
    from detector.models.backbone import STAGES, VARIANTS

    m = cfg["model"]
    b = m["backbone"]
    given = dict(b.get("dilations") or {})
    blocks = _RESNET_BLOCKS.get(b["depth"])
    traded = VARIANTS.get(m["variant"])
    if blocks is None or traded is None:
        return {k: list(v) for k, v in sorted(given.items())}
    per_block = 2 if b["depth"] < 50 else 1
    out, factor = {}, 1
    for name, n in zip(STAGES, blocks):
        if name in traded:
            factor *= 2
        rates = given.get(name)
        if rates is None:
            per_conv = [factor] * (n * per_block)
        elif isinstance(rates, list | tuple) and len(rates) == n:
            per_conv = [r for r in rates for _ in range(per_block)]
        else:
            per_conv = list(rates) if isinstance(rates, list | tuple) else rates
        if not isinstance(per_conv, list) or any(r != 1 for r in per_conv):
            out[name] = per_conv
        trident = m.get("trident") or {}
        stage = trident.get("stage", "layer4")
        if trident.get("enabled") and stage == name and isinstance(per_conv, list):
            out[name] = [[r * k for r in per_conv] for k in trident.get("branch_rates", [1, 2, 3])]
    return out


def model_signature(cfg) -> dict:
    """The config keys that decide the shapes of the model's weights, and what they mean.

    Shapes alone are not enough: a dc5 checkpoint evaluated as c5 (other dilations), or with
    other anchor sizes, loads without an error and is wrong. RPN/ROI sampling, NMS and
    matcher settings do not change what the weights mean and stay out.
    """
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
        "dilations": resolved_dilations(cfg),
        "anchor_sizes": [float(s) for s in m["anchors"]["sizes"]],
        "aspect_ratios": [float(r) for r in m["anchors"]["aspect_ratios"]],
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


def atomic_save(obj: Any, path: str | Path) -> None:
    """``torch.save`` through :func:`detector.utils.files.atomic_file` (temp file, fsync, rename)."""
    with atomic_file(path, "wb") as f:
        torch.save(obj, f)


def model_file(state_dict: dict, cfg, num_classes: int, iteration: int) -> dict:
    """What ``model_final.pth`` / ``model_best.pth`` hold: the weights and what they are."""
    cfg_dict = cfg.to_dict() if hasattr(cfg, "to_dict") else dict(cfg)
    return {
        "format": MODEL_FORMAT,
        "version": 1,
        "model": state_dict,
        "fingerprint": config_fingerprint(cfg, num_classes),
        "signature": {**model_signature(cfg), "num_classes": int(num_classes)},
        "config": cfg_dict,
        "iteration": int(iteration),
    }


def write_error(err: OSError, path: Path, previous: Path | None = None) -> CheckpointError:
    """A failed checkpoint/model write as one line: the file, the reason, what is intact, the fix."""
    code = errno.errorcode.get(err.errno or 0, "error")
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = f"free space on the disk of {path.parent}"
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {path.parent} writable"
    else:
        fix = f"check {path.parent} and its disk"
    kept = (
        f"the previous checkpoint {previous} is intact" if previous else "no older file was touched"
    )
    return CheckpointError(
        f"cannot write {path}: {err.strerror or err} ({code}); {kept} (writes are atomic and the "
        f"partial file was removed). Fix: {fix}, then continue with --resume"
    )


class CheckpointManager:
    """Writes ``model_<iter>.pth`` files, keeps the last ``keep_last``, tracks the latest.

    ``last_checkpoint`` names the newest checkpoint of the run; a pointer to a missing or
    unreadable file is an error naming both, never a silent fall-back to another file.
    """

    def __init__(self, directory: str | Path, keep_last: int = 3):
        self.dir = Path(directory)
        self.keep_last = keep_last

    def path_for(self, iteration: int) -> Path:
        return self.dir / f"model_{iteration:07d}.pth"

    def save(self, state: dict, iteration: int) -> Path:
        path = self.path_for(iteration)
        previous = self.latest_or_none()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            atomic_save(state, path)
            atomic_write_bytes(path.name.encode() + b"\n", self.dir / LAST_POINTER)
        except OSError as err:
            raise write_error(err, path, previous) from None
        self.prune(iteration)
        return path

    def all_checkpoints(self) -> list[Path]:
        found = [p for p in self.dir.glob("model_*.pth") if CKPT_RE.match(p.name)]
        return sorted(found, key=lambda p: int(CKPT_RE.match(p.name).group(1)))

    def prune(self, current: int | None = None) -> None:
        """Keep the ``keep_last`` newest checkpoints up to ``current`` (the one just written).

        Files numbered above ``current`` (a run resumed from an earlier checkpoint) are left
        alone: they are overwritten when the run gets there, and the one just written is
        never deleted because another file sorts higher.
        """
        if self.keep_last <= 0:
            return
        found = self.all_checkpoints()
        if current is not None:
            found = [p for p in found if int(CKPT_RE.match(p.name).group(1)) <= current]
        for old in found[: -self.keep_last]:
            old.unlink(missing_ok=True)

    def latest(self) -> Path | None:
        """The checkpoint named by ``last_checkpoint``; without that file, the highest-numbered.

        Raises :class:`CheckpointError` when the pointer is unreadable or names a file that is
        not there (saying which, and what to do), instead of resuming from another file.
        """
        pointer = self.dir / LAST_POINTER
        if not pointer.exists():
            found = self.all_checkpoints()
            return found[-1] if found else None
        found = self.all_checkpoints()
        newest = found[-1].name if found else None
        try:
            name = pointer.read_text(errors="replace").strip()
        except OSError as err:
            raise CheckpointError(f"cannot read {pointer}: {err.strerror or err}") from None
        if not CKPT_RE.match(name):
            raise CheckpointError(
                f"{pointer} should name a checkpoint like model_0000500.pth but holds {name[:60]!r}. "
                f"Fix: write the name of the checkpoint to resume from into it, or delete it to "
                f"resume from the newest one ({newest or 'there is none'})"
            )
        cand = self.dir / name
        if not cand.is_file():
            others = [p.name for p in found]
            fix = (
                f"restore {name}, or delete {pointer} to resume from the newest remaining "
                f"checkpoint ({newest})"
                if others
                else f"restore {name}; no checkpoint remains, so the run cannot be resumed: "
                "train into a new --output (or --overwrite)"
            )
            raise CheckpointError(
                f"{pointer} points to {name}, which is missing from {self.dir}. Fix: {fix}"
            )
        return cand

    def latest_or_none(self) -> Path | None:
        """:meth:`latest`, or ``None`` when the pointer is bad (for messages)."""
        try:
            return self.latest()
        except CheckpointError:
            return None

    def previous(self, path: Path) -> Path | None:
        """The newest checkpoint older than ``path`` (what to fall back to if it is corrupt)."""
        older = [p for p in self.all_checkpoints() if p.name < Path(path).name]
        return older[-1] if older else None


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


def is_model_file(obj: Any) -> bool:
    """A training checkpoint or a ``smalldet-model`` file (both carry a fingerprint)."""
    return isinstance(obj, dict) and obj.get("format") in (FORMAT, MODEL_FORMAT) and "model" in obj


def extract_state_dict(obj: Any, path: str | Path = "checkpoint") -> dict:
    """The model state dict from a training checkpoint, a model file or a bare state dict."""
    if is_model_file(obj) or isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        sd = obj["model"]
    elif isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd = obj
    else:
        raise CheckpointError(
            f"{path}: neither a smalldet checkpoint/model file nor a model state dict "
            f"(got {type(obj).__name__}"
            + (f" with keys {sorted(obj)[:8]}" if isinstance(obj, dict) else "")
            + ")"
        )
    if any(k.startswith("module.") for k in sd):
        sd = {k.removeprefix("module."): v for k, v in sd.items()}
    return sd


def check_fingerprint(obj: Any, cfg, num_classes: int | None, path: str | Path) -> None:
    """Refuse a checkpoint or model file whose model-shaping config differs from ``cfg``.

    Files written before a key joined the signature are compared on the keys they have
    (a bare state dict has none and is only checked by shape when loaded).
    """
    if not is_model_file(obj) or cfg is None:
        return
    want = config_fingerprint(cfg, num_classes)
    have = obj.get("fingerprint")
    if have is None or have == want:
        return
    theirs = obj.get("signature") or {}
    ours = model_signature(cfg)
    if num_classes is not None:
        ours["num_classes"] = int(num_classes)
    if theirs:
        common = {k: theirs[k] for k in theirs if k in ours}
        diff = signature_diff(common, {k: ours[k] for k in common})
        if not diff:
            return  # an older signature: everything it records agrees
    else:
        diff = []
    raise CheckpointError(
        f"checkpoint {path} was written by a different model config "
        f"(checkpoint vs current: {'; '.join(diff) or 'fingerprint differs'}). Use the config "
        "the run was trained with (its config.yaml in the run directory)."
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
