"""Inference over a dataset into COCO results, gathered across ranks.

Predictions are mapped back to the original image pixels (the data pipeline may resize) and
from the model's contiguous labels ``1..K`` to the dataset's category ids, so that the results
score directly against the dataset's annotation file.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tqdm import tqdm

from .distributed import all_gather_object, get_rank, get_world_size


def _to_original(boxes: torch.Tensor, size, orig_size) -> torch.Tensor:
    h, w = (int(v) for v in size)
    oh, ow = (int(v) for v in orig_size)
    if (h, w) == (oh, ow):
        return boxes
    scale = torch.tensor([ow / w, oh / h, ow / w, oh / h], dtype=boxes.dtype)
    return boxes * scale


def _cat_id(mapping, label: int) -> int:
    if isinstance(mapping, dict):
        return int(mapping[label])
    return int(mapping[label - 1]) if len(mapping) and label >= 1 else int(label)


def outputs_to_coco(outputs, targets, label_to_cat_id) -> list[dict]:
    """Torchvision detection outputs -> COCO result dicts in original image coordinates."""
    results = []
    for out, tgt in zip(outputs, targets):
        boxes = out["boxes"].detach().float().cpu()
        size = tgt.get("size", tgt.get("orig_size"))
        orig = tgt.get("orig_size", size)
        if size is not None and orig is not None:
            boxes = _to_original(boxes, size, orig)
        xywh = boxes.clone()
        xywh[:, 2:] -= xywh[:, :2]
        image_id = int(tgt["image_id"])
        for b, s, lab in zip(xywh.tolist(), out["scores"].tolist(), out["labels"].tolist()):
            results.append(
                {
                    "image_id": image_id,
                    "category_id": _cat_id(label_to_cat_id, int(lab)),
                    "bbox": [round(v, 3) for v in b],
                    "score": round(float(s), 5),
                }
            )
    return results


@torch.no_grad()
def predict_shard(
    model, loader, dataset, device=None, autocast_dtype=None, progress=False, forward=None
):
    """This rank's results and the image ids it saw (``progress``: a tqdm bar on rank 0).

    ``forward`` replaces ``model(images)`` (sliced inference,
    :func:`detector.engine.slicing.make_forward`); its boxes are in the frame of the images
    it was given, like the model's.
    """
    model_was_training = model.training
    model.eval()
    if device is None:
        device = next(model.parameters()).device
    device = torch.device(device)
    results, seen = [], []
    try:
        batches = loader
        if progress and get_rank() == 0:
            batches = tqdm(loader, desc="inference", unit="batch", dynamic_ncols=True)
        for images, targets in batches:
            images = [im.to(device, non_blocking=True) for im in images]
            if forward is not None:
                outputs = forward(images)
            elif autocast_dtype is not None and device.type == "cuda":
                with torch.autocast("cuda", dtype=autocast_dtype):
                    outputs = model(images)
            else:
                outputs = model(images)
            results.extend(outputs_to_coco(outputs, targets, dataset.label_to_cat_id))
            seen.extend(int(t["image_id"]) for t in targets)
    finally:
        model.train(model_was_training)
    return results, seen


def predict_dataset(
    model,
    loader,
    dataset,
    device=None,
    autocast_dtype=None,
    with_ids=False,
    progress=False,
    forward=None,
):
    """COCO results for every image of ``dataset``, gathered from all ranks (on every rank).

    With ``with_ids=True`` also returns the list of image ids evaluated, one entry per image
    per rank that ran it (so duplicates or gaps across ranks are visible).
    """
    results, seen = predict_shard(model, loader, dataset, device, autocast_dtype, progress, forward)
    gathered = all_gather_object((results, seen))
    all_results = [r for part, _ in gathered for r in part]
    all_ids = [i for _, ids in gathered for i in ids]
    return (all_results, all_ids) if with_ids else all_results


def predict_split(cfg, model, dataset, device=None, progress=True, forward=None) -> list[dict]:
    """COCO results of ``model`` on ``dataset`` with the config's test loader (every rank
    predicts its shard; all ranks get all results)."""
    from detector.data import build_test_loader

    loader = build_test_loader(cfg, dataset, rank=get_rank(), world_size=get_world_size())
    return predict_dataset(model, loader, dataset, device, progress=progress, forward=forward)


def run_inference(cfg, checkpoint_path, images=None, ann=None, slicing=None):
    """Predict the val set (or ``images``/``ann``) with a checkpoint: ``(results, gt_path)``.

    ``slicing`` (a :class:`~detector.engine.slicing.SliceSpec`) predicts each image from its
    tiles: the images then reach it at their original size (the tiles have their own scale,
    and the whole-image pass, if any, applies the config's test resize itself).

    ``checkpoint_path`` may be a full training checkpoint or a ``model_final.pth``
    (:func:`detector.engine.loading.load_trained_model` loads it and refuses a mismatch).
    Runs on every rank when launched with torchrun (each image once).
    """
    from detector.data import build_dataset

    from .loading import load_trained_model, model_device, require_checkpoint

    device = model_device(cfg)  # a wrong device or path costs nothing: checked before the data
    require_checkpoint(checkpoint_path)
    dataset = build_dataset(cfg, "val", images=images, ann=ann)
    model, _ = load_trained_model(cfg, checkpoint_path, device, dataset=dataset)
    forward = None
    if slicing is not None:
        from .slicing import make_forward

        dataset.transforms = None
        forward = make_forward(model, cfg, slicing, device)
    results = predict_split(cfg, model, dataset, device, forward=forward)
    return results, str(Path(dataset.ann_file))
