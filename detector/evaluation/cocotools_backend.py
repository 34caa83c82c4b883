"""pycocotools as a selectable backend (and the reference in the tests)."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

from detector.utils.bins import SizeBin

from .coco_io import Detections, GroundTruth


def _coco_from(gt: GroundTruth):
    from pycocotools.coco import COCO

    if gt.coco is not None:
        return gt.coco
    coco = COCO()
    data = copy.copy(gt.dataset)
    anns = []
    for i, a in enumerate(data["annotations"]):
        a = dict(a)
        a.setdefault("id", i + 1)
        if "area" not in a:
            a["area"] = a["bbox"][2] * a["bbox"][3]
        a.setdefault("iscrowd", 0)
        anns.append(a)
    data["annotations"] = anns
    coco.dataset = data
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def run_cocoeval(
    gt: GroundTruth,
    dets: Detections,
    bins: list[SizeBin],
    max_dets: tuple[int, ...],
    iou_thrs: np.ndarray,
    quiet: bool = True,
):
    """Run COCOeval with our bins; returns (precision, recall, COCOeval)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    coco_gt = _coco_from(gt)
    sink = io.StringIO() if quiet else None
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        if len(dets):
            # the GT's own ids (ints, or the strings of a GT with string image ids), so that
            # loadRes finds every image in the COCO object built from the same GT
            img_ids, cat_ids = gt.img_ids.tolist(), gt.cat_ids.tolist()
            records = [
                {
                    "image_id": img_ids[i],
                    "category_id": cat_ids[c],
                    "bbox": [float(v) for v in b],
                    "score": float(s),
                }
                for i, c, b, s in zip(dets.img.tolist(), dets.cat.tolist(), dets.bbox, dets.score)
            ]
            coco_dt = coco_gt.loadRes(records)
        else:
            coco_dt = COCO()
            coco_dt.dataset = {
                "images": coco_gt.dataset["images"],
                "categories": coco_gt.dataset["categories"],
                "annotations": [],
            }
            coco_dt.createIndex()
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.params.iouThrs = np.asarray(iou_thrs, np.float64)
        ev.params.maxDets = list(max_dets)
        ev.params.areaRng = [list(b.area_range) for b in bins]
        ev.params.areaRngLbl = [b.name for b in bins]
        ev.evaluate()
        ev.accumulate()
    return ev.eval["precision"], ev.eval["recall"], ev
