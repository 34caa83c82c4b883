"""``smalldet predict``: a trained model on a folder of images, into one COCO results file.

The pipeline: the images are listed (:func:`detector.data.images.list_images`), read in a
``DataLoader`` (so decoding overlaps the model; a file that cannot be decoded comes back as an
error, is reported by name and skipped), predicted whole or in tiles
(:mod:`detector.engine.slicing`) in batches, optionally drawn, and written as
``OUT/results.json``::

    {"info": {...}, "images": [{"id", "file_name", "width", "height"}], "categories": [...],
     "annotations": [{"id", "image_id", "category_id", "bbox": [x, y, w, h], "score", "area"}],
     "failed": [{"file_name", "path", "error"}]}

``file_name`` is the path relative to the folder (or glob root) given, so ``smalldet evaluate
--gt GT.json --results OUT/results.json`` scores it against any ground truth that names its
images the same way (it matches them by ``file_name``). Category ids and names are those of
the training set (the run's ``data.train_ann``, the built-in classes, or ``ann``). Every file
is written atomically: an existing ``results.json`` is replaced whole or not at all.
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from detector.data.images import ImageEntry, ImageReadError, list_images, read_image
from detector.utils.bins import assign_bin, get_bins
from detector.utils.files import atomic_file, atomic_write_json, read_json

from .checkpoint import CheckpointError
from .slicing import SliceSpec, make_forward

logger = logging.getLogger(__name__)

RESULTS_NAME = "results.json"
DRAWN_DIR = "images"


class _Images(Dataset):
    """``(index, uint8 image or None, error or None)`` per entry: a bad file is data here, not
    an exception, so one corrupt image never stops the loader."""

    def __init__(self, entries: list[ImageEntry]):
        self.entries = entries

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, i: int):
        try:
            return i, read_image(self.entries[i].path), None
        except ImageReadError as err:
            return i, None, str(err)


def _collate(batch):
    return list(batch)


@dataclass
class PredictSummary:
    """What :func:`predict_folder` did, for the command's report and exit code."""

    results: Path
    images: int = 0
    detections: int = 0
    failed: list[dict] = field(default_factory=list)
    drawn: Path | None = None
    seconds: float = 0.0

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else 0.0


def model_categories(cfg, num_classes: int, ann: str | Path | None = None) -> list[dict]:
    """The ``{"id", "name"}`` of the model's labels ``1..K``, in label order.

    From ``ann`` (a COCO file with the training categories) when given, else from the
    training set the config names (the built-in classes, or ``data.train_ann``), else ids
    ``1..K`` named ``class_K`` with a warning. Labels map to categories in sorted id order, as
    :class:`~detector.data.coco.CocoDataset` maps them for training.
    """
    source = str(ann) if ann else None
    cats = None
    if ann:
        data = read_json(ann, "categories file", error=CheckpointError)
        cats = data.get("categories") if isinstance(data, dict) else None
        if not isinstance(cats, list):
            raise CheckpointError(f"{ann}: no 'categories' list. Fix: give a COCO JSON file")
    elif cfg["data"]["source"] == "builtin":
        from detector.data.synthetic import CLASSES

        cats, source = [{"id": k + 1, "name": n} for k, n in enumerate(CLASSES)], "built-in"
    elif cfg["data"].get("train_ann") and Path(cfg["data"]["train_ann"]).is_file():
        source = cfg["data"]["train_ann"]
        data = read_json(source, "training annotations", error=CheckpointError)
        cats = data.get("categories") if isinstance(data, dict) else None
    if cats is not None:
        cats = sorted(
            ({"id": int(c["id"]), "name": str(c.get("name", c["id"]))} for c in cats),
            key=lambda c: c["id"],
        )
        if len(cats) == num_classes:
            return cats
        if ann:
            raise CheckpointError(
                f"{ann} lists {len(cats)} categories but the model predicts {num_classes}. "
                "Fix: give the annotation file the model was trained on"
            )
        logger.warning(
            "%s lists %d categories but the model predicts %d; writing ids 1..%d instead",
            source,
            len(cats),
            num_classes,
            num_classes,
        )
    else:
        logger.warning(
            "no training categories found (data.train_ann of the config is not readable): "
            "writing category ids 1..%d; pass --ann TRAIN.json for the real ids and names",
            num_classes,
        )
    return [{"id": k, "name": f"class_{k}"} for k in range(1, num_classes + 1)]


def detections_to_records(det: dict, image_id: int, cats: list[dict], first_id: int) -> list:
    """One image's detections (xyxy, labels ``1..K``) as COCO result records."""
    boxes = det["boxes"].tolist()
    out = []
    for k, (b, s, lab) in enumerate(zip(boxes, det["scores"].tolist(), det["labels"].tolist())):
        w, h = b[2] - b[0], b[3] - b[1]
        out.append(
            {
                "id": first_id + k,
                "image_id": image_id,
                "category_id": cats[int(lab) - 1]["id"],
                "bbox": [round(b[0], 3), round(b[1], 3), round(w, 3), round(h, 3)],
                "score": round(float(s), 5),
                "area": round(w * h, 3),
            }
        )
    return out


def draw_detections(
    image: torch.Tensor, det: dict, cats: list[dict], bins="coco", score_thresh: float = 0.3
) -> torch.Tensor:
    """``image`` (uint8) with the boxes at or above ``score_thresh``, coloured by size bin and
    labelled ``<class> <score>``."""
    from torchvision.utils import draw_bounding_boxes

    from .visualize import bin_colours

    bins = get_bins(bins) if isinstance(bins, str | list) or bins is None else bins
    _, colours = bin_colours(bins)
    keep = det["scores"] >= score_thresh
    boxes, scores, labels = det["boxes"][keep], det["scores"][keep], det["labels"][keep]
    if not len(boxes):
        return image
    areas = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).tolist()
    names = [cats[int(lab) - 1]["name"] for lab in labels.tolist()]
    text = [f"{n} {s:.2f}" for n, s in zip(names, scores.tolist())]
    col = [colours[assign_bin(a, bins)] for a in areas]
    return draw_bounding_boxes(image, boxes, labels=text, colors=col, width=2)


def _drawn_path(out_dir: Path, name: str) -> tuple[Path, str]:
    """Where a drawn image goes: its own name and format where PIL can write that format, else
    the name with ``.png`` added."""
    Image.init()
    fmt = Image.registered_extensions().get(Path(name).suffix.lower())
    if fmt in Image.SAVE:
        return out_dir / name, fmt
    return out_dir / f"{name}.png", "PNG"


def save_image(image: torch.Tensor, path: Path, fmt: str) -> None:
    """A uint8 ``3 x H x W`` image written atomically in ``fmt``."""
    pil = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
    extra = {"quality": 95} if fmt == "JPEG" else {}
    with atomic_file(path, "wb") as f:
        pil.save(f, format=fmt, **extra)


def predict_folder(
    cfg,
    checkpoint: str | Path,
    inputs: list[str],
    output: str | Path,
    *,
    slicing: SliceSpec | None = None,
    batch_size: int = 1,
    draw: bool = False,
    draw_score: float = 0.3,
    bins=None,
    device=None,
    workers: int | None = None,
    ann: str | Path | None = None,
    progress: bool = True,
    config_path: str | None = None,
) -> PredictSummary:
    """Predict every image of ``inputs`` with ``checkpoint`` into ``output/results.json``
    (and ``output/images/`` with ``draw``); see the module docstring.

    ``batch_size``: images per forward pass (with ``slicing``, one image at a time, its tiles
    ``slicing.batch_size`` per forward pass).
    Images that cannot be read are listed in ``summary.failed`` and in the file.
    """
    from .loading import load_trained_model, model_device, require_checkpoint

    out_dir = Path(output)
    device = torch.device(device) if device is not None else model_device(cfg)
    require_checkpoint(checkpoint)
    entries = list_images(inputs, exclude=out_dir)
    model, info = load_trained_model(cfg, checkpoint, device)
    cats = model_categories(cfg, info["num_classes"], ann)
    forward = make_forward(model, cfg, slicing, device, batch_size)
    bins = bins or cfg["eval"]["bins"]
    workers = int(cfg["data"]["num_workers"]) if workers is None else workers
    loader = DataLoader(
        _Images(entries),
        batch_size=batch_size if slicing is None else 1,  # sliced: the tiles are the batch
        num_workers=workers,
        collate_fn=_collate,
    )
    summary = PredictSummary(results=out_dir / RESULTS_NAME)
    if draw:
        summary.drawn = out_dir / DRAWN_DIR
    images, records, failed = [], [], []
    bar = tqdm(
        total=len(entries), desc="predict", unit="img", disable=not progress, file=sys.stderr
    )
    start = time.perf_counter()
    try:
        for batch in loader:
            ok = []
            for i, image, error in batch:
                if image is None:
                    e = entries[i]
                    failed.append({"file_name": e.name, "path": str(e.path), "error": error})
                    bar.write(f"warning: skipped {e.name}: {error}", file=sys.stderr)
                else:
                    ok.append((i, image))
            dets = forward([im for _, im in ok]) if ok else []
            for (i, image), det in zip(ok, dets):
                image_id = len(images) + 1
                h, w = int(image.shape[-2]), int(image.shape[-1])
                images.append(
                    {"id": image_id, "file_name": entries[i].name, "width": w, "height": h}
                )
                records += detections_to_records(det, image_id, cats, len(records) + 1)
                if draw:
                    path, fmt = _drawn_path(summary.drawn, entries[i].name)
                    save_image(draw_detections(image, det, cats, bins, draw_score), path, fmt)
            bar.update(len(batch))
    finally:
        bar.close()
    summary.seconds = time.perf_counter() - start
    summary.images, summary.detections, summary.failed = len(images), len(records), failed
    doc = {
        "info": {
            "description": "smalldet predictions",
            "checkpoint": str(checkpoint),
            "config": config_path,
            "iteration": info.get("iteration"),
            "slicing": slicing.to_dict() if slicing is not None else None,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        },
        "images": images,
        "categories": cats,
        "annotations": records,
        "failed": failed,
    }
    atomic_write_json(doc, summary.results, indent=None)
    return summary
