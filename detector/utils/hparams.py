"""The config keys shown in TensorBoard's HParams tab, by the trainer and by a study report."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from .dotted import get_dotted

HPARAM_KEYS = [
    "model.variant",
    "model.backbone.depth",
    "model.backbone.norm",
    "model.backbone.dilations",
    "model.anchors.sizes",
    "model.rpn.matcher",
    "model.roi.matcher",
    "solver.optimizer",
    "solver.lr",
    "solver.ims_per_batch",
    "solver.max_iter",
    "solver.schedule",
    "solver.weight_decay",
    "data.transforms.crop_size",
    "eval.bins",
    "seed",
]


def hparam_values(cfg: dict, keys: Iterable[str] = HPARAM_KEYS) -> dict[str, Any]:
    """The values of ``keys`` in ``cfg`` as HParams accepts them (lists and dicts as JSON)."""
    out: dict[str, Any] = {}
    for key in dict.fromkeys(keys):
        value = get_dotted(cfg, key)
        if isinstance(value, bool | int | float | str):
            out[key] = value
        elif value is not None:
            out[key] = json.dumps(value, sort_keys=True)
    return out
