"""One way to turn a config and a trained checkpoint into a model ready to predict.

Evaluation (:func:`detector.engine.inference.run_inference`), the study worker (inference and
timing) and prediction all call :func:`load_trained_model`, so they agree on how the class count
is decided, on the fingerprint check and on the errors: a missing, corrupt or mismatched
checkpoint raises :class:`~detector.engine.checkpoint.CheckpointError`, whose one-line message
names the file and the fix.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from .checkpoint import CheckpointError, extract_state_dict, load_checkpoint, load_model_weights
from .distributed import resolve_device

CLS_WEIGHT = "roi_heads.box_predictor.cls_score.weight"


def _positive_int(v: Any) -> int | None:
    return int(v) if isinstance(v, int) and not isinstance(v, bool) and v > 0 else None


def checkpoint_num_classes(obj: Any, path: str | Path = "checkpoint") -> int | None:
    """The foreground class count a loaded checkpoint was trained with: its recorded signature,
    else its recorded config, else the shape of the classifier (background included), else
    None."""
    if isinstance(obj, dict):
        sig = obj.get("signature")
        if isinstance(sig, dict) and _positive_int(sig.get("num_classes")):
            return int(sig["num_classes"])
        cfg = obj.get("config")
        model_cfg = cfg.get("model") if isinstance(cfg, dict) else None
        if isinstance(model_cfg, dict) and _positive_int(model_cfg.get("num_classes")):
            return int(model_cfg["num_classes"])
    w = extract_state_dict(obj, path).get(CLS_WEIGHT)
    return int(w.shape[0]) - 1 if isinstance(w, torch.Tensor) and w.ndim == 2 else None


def require_checkpoint(checkpoint: str | Path) -> Path:
    """``checkpoint`` as a path, or a :class:`CheckpointError` when there is no such file (so
    callers can check it before building a dataset)."""
    path = Path(checkpoint)
    if not path.is_file():
        raise CheckpointError(
            f"checkpoint not found: {path}. Fix: point at the model_final.pth (or a "
            "model_NNNNNNN.pth) of a trained run"
        )
    return path


def model_device(cfg) -> torch.device:
    """The device ``cfg.device`` names (``auto``: CUDA when there is one, else the CPU)."""
    return resolve_device(cfg.get("device", "auto"))


def load_trained_model(
    cfg, checkpoint: str | Path, device: str | torch.device | None = None, dataset=None
) -> tuple[nn.Module, dict]:
    """Build ``cfg``'s detector, load ``checkpoint`` into it, move it to ``device`` (default:
    ``cfg.device``, ``auto`` = CUDA when there is one) and put it in eval mode.

    The number of classes is ``cfg.model.num_classes`` when set, else the checkpoint's (its
    signature, config or classifier shape), else ``dataset.num_classes``. With ``dataset``,
    a model whose class count differs from the dataset's is refused (its labels would map to the
    wrong categories). ``checkpoint`` is a training checkpoint, a ``model_final.pth`` or a bare
    state dict; :func:`~detector.engine.checkpoint.load_model_weights` loads it and refuses one
    written by another model config (variant, depth, ...) when it carries a fingerprint.

    Returns ``(model, info)``; ``info`` holds ``checkpoint``, ``num_classes``,
    ``num_classes_from`` (``config`` | ``checkpoint`` | ``dataset``), ``device``, and the
    checkpoint's ``iteration`` and training ``config`` where it records them (else None).
    """
    from detector.models import build_detector

    path = require_checkpoint(checkpoint)
    device = torch.device(device) if device is not None else model_device(cfg)
    n = _positive_int(cfg["model"]["num_classes"])
    source = "config"
    if n is None:
        # the config leaves it to the data: read it from the checkpoint (a second read of the
        # file; load_model_weights takes a path)
        n, source = checkpoint_num_classes(load_checkpoint(path), path), "checkpoint"
    if n is None and dataset is not None:
        n, source = int(dataset.num_classes), "dataset"
    if n is None:
        raise CheckpointError(
            f"checkpoint {path}: cannot tell how many classes the model has (no "
            f"model.num_classes in the config, none recorded in the checkpoint, no '{CLS_WEIGHT}' "
            "in its weights). Fix: set model.num_classes=K, or use a checkpoint written by "
            "this project"
        )
    if dataset is not None and n != dataset.num_classes:
        raise CheckpointError(
            f"checkpoint {path} predicts {n} classes (from the {source}) but the dataset "
            f"{dataset.ann_file} has {dataset.num_classes}. Fix: evaluate on data with the same "
            "categories as training"
        )
    model = build_detector(cfg, num_classes=n)
    obj = load_model_weights(model, path, cfg, n)
    model.to(device).eval()
    meta = obj if isinstance(obj, dict) and "model" in obj else {}
    info = {
        "checkpoint": str(path),
        "num_classes": n,
        "num_classes_from": source,
        "device": device,
        "iteration": meta.get("iteration"),
        "config": meta.get("config"),
    }
    return model, info
