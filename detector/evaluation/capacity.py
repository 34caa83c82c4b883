"""Whether maxDets or the model's caps cut recall: counted per image and said in the report.

pycocotools keeps the top ``maxDets`` detections per image *and class*, so an image holding more
ground truth of one class than the largest maxDets cannot reach full recall even with perfect
detections. The model's test-time caps (``model.rpn.post_nms_top_n_test``,
``model.roi.detections_per_img`` ...) count all classes of an image together. Either one lowers
AP and AR on dense images without any error, so both are counted here, image by image, and the
report states how many images each one cuts.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from detector.config.defaults import DEFAULTS
from detector.utils.bins import RECALL_CAPS, recall_cap_keys
from detector.utils.dotted import get_dotted

from .coco_io import GroundTruth
from .fast_eval import coco_iou_thrs


def model_caps(cfg: Mapping) -> dict[str, int]:
    """The test-time caps of the model a config builds (see :data:`RECALL_CAPS`); keys the
    config lacks are left out (unknown caps are not reported)."""
    variant = get_dotted(cfg, "model.variant")
    if variant is None:
        return {}
    caps = {key: get_dotted(cfg, key) for key in recall_cap_keys(variant)}
    return {key: int(v) for key, v in caps.items() if v is not None}


def eval_settings(cfg: Mapping) -> dict[str, Any]:
    """``evaluate()`` keyword arguments from a loaded config: its ``eval.*`` keys (with the
    preset already applied by the loader) and the model's caps, so every caller scores alike.

    A key the config lacks (a ``config.yaml`` written before it existed) takes its default.
    """
    ev = {**DEFAULTS["eval"], **(cfg.get("eval") or {})}
    return {
        "bins": ev["bins"],
        "max_dets": tuple(ev["max_dets"]),
        # [] is COCO's, given as such so that the preset's own thresholds cannot come back
        "iou_thrs": list(ev["iou_thrs"]) or coco_iou_thrs(),
        "backend": ev["backend"],
        "preset": ev["preset"] or None,
        "model_caps": model_caps(cfg),
    }


def _image_id(gt: GroundTruth, i: int) -> Any:
    return gt.img_ids[i].item()


def check_recall_caps(
    gt: GroundTruth, max_dets: tuple[int, ...], caps: Mapping[str, int] | None = None
) -> tuple[dict[str, Any], list[str]]:
    """The ``recall_caps`` section of the report and its messages (warned when images are cut).

    Counts ignore crowd boxes: they are never needed for recall.
    """
    max_det = int(max(max_dets))
    keep = ~gt.crowd
    img, cat = gt.img[keep], gt.cat[keep]
    n_img, n_cat = gt.num_images, max(len(gt.cat_ids), 1)
    per_img = np.bincount(img, minlength=n_img) if n_img else np.zeros(0, np.int64)
    per_class = np.zeros(n_img, np.int64)  # the most GT of one class in each image
    top_cat = np.zeros(n_img, np.int64)
    if len(img):
        keys, counts = np.unique(img * n_cat + cat, return_counts=True)
        order = np.lexsort((-counts, keys // n_cat))  # per image, the largest class first
        first = np.r_[True, np.diff(keys[order] // n_cat) != 0]
        rows = order[first]
        per_class[keys[rows] // n_cat] = counts[rows]
        top_cat[keys[rows] // n_cat] = keys[rows] % n_cat
    section: dict[str, Any] = {"max_dets": max_det, "checks": []}
    messages: list[str] = []
    cut_any = np.zeros(n_img, bool)

    over = per_class > max_det
    cut_any |= over
    densest = int(per_class.argmax()) if n_img else None
    section["checks"].append(
        {
            "key": "max_dets",
            "value": max_det,
            "per": "image and class",
            "images_over": int(over.sum()),
            "cuts_recall": bool(over.any()),
        }
    )
    if over.any():
        name = gt.cat_names[int(top_cat[densest])]
        need = 1500 if per_class[densest] <= 1500 else int(per_class[densest])
        msg = (
            f"{int(over.sum())} of {n_img} images hold more GT boxes of one class than the "
            f"largest maxDets {max_det} (the densest image (id {_image_id(gt, densest)}) has "
            f"{int(per_class[densest])} {name!r} boxes, {int(per_img[densest])} in all): "
            f"pycocotools keeps the top {max_det} detections per image and class, so recall "
            f"and AP are capped there; pass a larger max_dets (e.g. '1,100,{need}'), or a dense "
            "preset: --preset dense (smalldet evaluate) or eval.preset=dense in the config "
            "(aitod with AI-TOD's bins)"
        )
        warnings.warn(msg, stacklevel=3)
        messages.append(msg)

    for key, value in (caps or {}).items():
        value = int(value)
        img_over = per_img > value
        cut_any |= img_over
        below = value < max_det
        section["checks"].append(
            {
                "key": key,
                "value": value,
                "per": "image",
                "below_max_dets": below,
                "images_over": int(img_over.sum()),
                "cuts_recall": bool(img_over.any()),
            }
        )
        if not below and not img_over.any():
            continue
        what = RECALL_CAPS.get(key, "boxes per image")
        need = max(max_det, int(per_img.max()) if n_img else 0)
        if img_over.any():
            top = int(per_img.argmax())
            effect = (
                f"{int(img_over.sum())} of {n_img} images hold more GT boxes than that (the "
                f"densest, id {_image_id(gt, top)}, has {int(per_img[top])}), so the model cannot "
                "reach full recall there"
            )
        else:
            effect = (
                f"no image here holds more than {value} GT boxes, so recall is not cut on this "
                "data, but the scores are in effect at maxDets "
                f"{value} rather than {max_det}"
            )
        msg = (
            f"{key}={value} caps the model at {value} {what}"
            f"{f', below the largest maxDets {max_det}' if below else ''}: {effect}; set {key} "
            f">= {need}, or set eval.preset=dense (or aitod), which raises the evaluator's maxDets "
            "and the model's caps together"
        )
        if img_over.any():
            warnings.warn(msg, stacklevel=3)
        messages.append(msg)
    section["images_capped"] = int(cut_any.sum())
    return section, messages


__all__ = ["check_recall_caps", "eval_settings", "model_caps"]
