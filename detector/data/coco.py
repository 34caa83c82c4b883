"""A COCO-format detection dataset: validated annotations, xyxy boxes, contiguous labels.

Boxes are converted once, from COCO xywh to xyxy. Category ids are mapped to contiguous labels
``1..K`` (0 is the background for torchvision detectors) in sorted id order; the map is kept
(``label_to_cat_id``) so that results are written back in the dataset's own ids.

``target["area"]`` is the ``area`` of the (validated) JSON, in original image pixels, also after
resizing: evaluation happens in original coordinates against :attr:`CocoDataset.ann_file`.
``target["size"]`` is ``(h, w)`` after the transforms, ``target["orig_size"]`` the JSON size.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms.v2 import functional as F

from detector.utils.files import atomic_write_json

from .validation import (
    DatasetError,
    ValidationReport,
    load_coco_json,
    resolve_image_path,
)

logger = logging.getLogger(__name__)

# where cleaned GT files go when validation changed something (never next to the data)
DEFAULT_CLEANED_DIR = ".cache/smalldet/validated"


def open_image(
    path: Path,
    image_id: Any,
    expected_hw: tuple[int, int] | None = None,
    *,
    verify: bool = False,
    root_key: str = "data.*_images",
) -> Image.Image:
    """Open an image as RGB; any failure becomes a DatasetError naming the image and file.

    ``root_key`` is the setting the image root came from, named in the fix.
    """
    where = f"image {image_id} (file '{path}')"
    if not path.is_file():
        raise DatasetError(
            f"{where}: file not found. Fix: check the image root ({root_key}) and the 'file_name' field."
        )
    try:
        if verify:
            with Image.open(path) as im:
                im.verify()
        with Image.open(path) as im:
            im.load()
            img = im.convert("RGB")
    except Exception as err:  # PIL raises many types for corrupt data
        raise DatasetError(
            f"{where}: cannot read the image: {type(err).__name__}: {err}. Fix: re-download or "
            "re-encode the file, or remove the image and its annotations from the JSON."
        ) from None
    if expected_hw is not None and (img.height, img.width) != tuple(expected_hw):
        raise DatasetError(
            f"{where}: decoded size {img.width}x{img.height} differs from the JSON "
            f"width x height = {expected_hw[1]}x{expected_hw[0]}. Fix: correct 'width'/'height' "
            "in the annotation file (boxes are in the JSON's pixel frame)."
        )
    return img


def _make_coco(data: dict):
    from pycocotools.coco import COCO

    coco = COCO()
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


class CocoDataset(torch.utils.data.Dataset):
    """Validated COCO detection dataset returning ``(image CHW float in [0,1], target)``.

    ``__getitem__`` accepts an index or ``(index, sample_seed)``; with a seed the random
    transforms run under a forked, seeded torch RNG, so a sample depends only on (index, seed).

    Everything that can be known from the JSON (and, with ``check_images``, from opening every
    image) is checked here, so a bad input fails at start-up rather than mid-run.
    ``images_key``/``ann_key`` name the settings the paths came from, for the fixes.
    """

    def __init__(
        self,
        image_root: str | Path,
        ann_file: str | Path,
        *,
        transforms=None,
        train: bool = False,
        keep_empty: bool | None = None,
        strict: bool = False,
        bad_area: str = "warn",
        check_images: bool = False,
        cleaned_dir: str | Path | None = None,
        images_key: str = "data.*_images",
        ann_key: str = "data.*_ann",
    ):
        self.image_root = Path(image_root)
        self.source_ann_file = Path(ann_file)
        self.images_key, self.ann_key = images_key, ann_key
        if not self.image_root.is_dir():
            raise DatasetError(
                f"{self.source_ann_file}: image root {self.image_root} is not a directory. "
                f"Fix: check {images_key}."
            )
        data, report = load_coco_json(
            ann_file, image_root=self.image_root, strict=strict, bad_area=bad_area, ann_key=ann_key
        )
        self.report: ValidationReport = report
        self.train = train
        self.transforms = transforms
        keep_empty = (not train) if keep_empty is None else keep_empty
        self._check_usable(data)
        self.ann_file = self.source_ann_file
        self.coco = _make_coco(data)

        self.cat_ids = sorted(c["id"] for c in data["categories"])
        self.cat_id_to_label = {cid: i + 1 for i, cid in enumerate(self.cat_ids)}
        self.label_to_cat_id = {v: k for k, v in self.cat_id_to_label.items()}
        names = {c["id"]: c["name"] for c in data["categories"]}
        self.class_names = [names[c] for c in self.cat_ids]
        self.num_classes = len(self.cat_ids)

        self._images = {im["id"]: im for im in data["images"]}
        anns_per_image: dict = {iid: [] for iid in self._images}
        for a in data["annotations"]:
            anns_per_image[a["image_id"]].append(a)
        self._anns = anns_per_image
        ids = [im["id"] for im in data["images"]]
        if train:
            # crowd regions are not training targets; an image left with none is "empty"
            usable = {
                iid
                for iid, anns in anns_per_image.items()
                if any(not a.get("iscrowd", 0) for a in anns)
            }
        else:
            usable = {iid for iid, anns in anns_per_image.items() if anns}
        if not keep_empty:
            ids = [i for i in ids if i in usable]
        self.image_ids: list[int] = ids
        if not ids:
            raise DatasetError(
                f"{self.source_ann_file}: none of the {len(self._images)} images has an "
                "annotation, and images without one are left out (keep_empty=False). "
                "Fix: keep empty images, or use a file with annotations."
            )
        if check_images:
            self.check_images()
        if report.modified:
            # evaluation must use the same GT as training: write the cleaned file and point to
            # it (only once every check passed, so a failed start leaves nothing behind)
            raw = self.source_ann_file.read_bytes()
            key = hashlib.sha1(raw + json.dumps([strict, bad_area]).encode()).hexdigest()[:16]
            out_dir = Path(cleaned_dir) if cleaned_dir else Path(DEFAULT_CLEANED_DIR)
            target = out_dir / f"{self.source_ann_file.stem}.validated-{key}.json"
            if not target.is_file():
                atomic_write_json(data, target, indent=None, sort_keys=True)
            self.ann_file = target

    def _check_usable(self, data: dict) -> None:
        """A valid file can still hold nothing to train on or evaluate: say so now, not as a
        ZeroDivisionError in the sampler or an all -1 evaluation after training."""
        ann, rep = self.source_ann_file, self.report
        if not data["images"]:
            purpose = "train on" if self.train else "evaluate"
            raise DatasetError(
                f"{ann}: section 'images' is empty, so there is nothing to {purpose}. Fix: point "
                f"{self.ann_key} at a COCO file that lists its images under 'images'."
            )
        objects = sum(1 for a in data["annotations"] if not a.get("iscrowd", 0))
        if self.train and not objects:
            dropped = rep.dropped_nan + rep.dropped_degenerate
            crowd = len(data["annotations"]) - objects
            raise DatasetError(
                f"{ann}: no annotation to train on ({len(data['images'])} images; "
                f"{rep.annotations + dropped} annotations in the file: {crowd} crowd, {dropped} "
                "dropped as NaN, degenerate or outside their image). Fix: point "
                f"{self.ann_key} at the training set with its annotations (bbox is COCO "
                "[x, y, width, height] in pixels)."
            )
        if not self.train and not data["annotations"]:
            rep.warn(
                f"{ann}: section 'annotations' is empty: evaluation has no ground truth and "
                f"every AP will be -1. Fix: point {self.ann_key} at a file with annotations."
            )

    # ------------------------------------------------------------------ helpers
    def image_path(self, image_id: int) -> Path:
        return resolve_image_path(
            self.image_root,
            self._images[image_id]["file_name"],
            ann_file=self.source_ann_file,
            image_id=image_id,
        )

    def check_images(self) -> None:
        """Open (verify and decode) every image; raise one error naming the bad ones (all of
        them are logged), so a broken file fails at start-up, not hours into training."""
        bad = []
        for iid in self.image_ids:
            im = self._images[iid]
            try:
                open_image(
                    self.image_path(iid),
                    iid,
                    (int(im["height"]), int(im["width"])),
                    verify=True,
                    root_key=self.images_key,
                )
            except DatasetError as err:
                bad.append(str(err))
        if bad:
            shown = 3
            if len(bad) > shown:
                for msg in bad:
                    logger.error("%s", msg)
            more = f"; ... and {len(bad) - shown} more (all in the log)" if len(bad) > shown else ""
            raise DatasetError(
                f"{self.source_ann_file}: {len(bad)} of {len(self.image_ids)} images cannot be "
                f"used (data.check_images opened them all): {'; '.join(bad[:shown])}{more}"
            )

    def aspect_ratios(self) -> list[float]:
        """Width / height of every image, from the JSON (no image is opened)."""
        return [
            float(self._images[i]["width"]) / float(self._images[i]["height"])
            for i in self.image_ids
        ]

    def __len__(self) -> int:
        return len(self.image_ids)

    def raw_target(self, index: int) -> dict:
        """Target before transforms (xyxy boxes in JSON pixels, contiguous labels)."""
        iid = self.image_ids[index]
        info = self._images[iid]
        anns = self._anns[iid]
        if self.train:
            anns = [a for a in anns if not a.get("iscrowd", 0)]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]
        h, w = int(info["height"]), int(info["width"])
        return {
            "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
            "labels": torch.tensor(
                [self.cat_id_to_label[a["category_id"]] for a in anns], dtype=torch.int64
            ),
            "image_id": int(iid),
            "area": torch.tensor([float(a["area"]) for a in anns], dtype=torch.float32),
            "iscrowd": torch.tensor([int(a.get("iscrowd", 0)) for a in anns], dtype=torch.int64),
            "orig_size": (h, w),
        }

    def __getitem__(self, item):
        if isinstance(item, (tuple, list)):
            index, seed = int(item[0]), item[1]
        else:
            index, seed = int(item), None
        iid = self.image_ids[index]
        info = self._images[iid]
        pil = open_image(
            self.image_path(iid),
            iid,
            (int(info["height"]), int(info["width"])),
            root_key=self.images_key,
        )
        # transforms run on uint8 (cheaper to resize); converted to float in [0, 1] at the end
        image = tv_tensors.Image(F.pil_to_tensor(pil))
        target = self.raw_target(index)
        if self.transforms is not None:
            if seed is not None:
                with torch.random.fork_rng(devices=[]):
                    # CPU generator only: transforms run on CPU, and torch.manual_seed would
                    # also (lazily) seed every accelerator, which costs more than the sample
                    torch.default_generator.manual_seed(int(seed) % (2**63))
                    image, target = self.transforms(image, target)
            else:
                image, target = self.transforms(image, target)
        target["boxes"] = target["boxes"].as_subclass(torch.Tensor)
        target["size"] = tuple(int(s) for s in image.shape[-2:])
        image = F.to_dtype(image.as_subclass(torch.Tensor), torch.float32, scale=True)
        return image, target
