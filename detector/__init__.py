"""smalldet: an experiment framework for small-object detection.

The package is split by concern: ``config`` (schema and YAML loading), ``models`` (dilated
ResNet backbones and Faster R-CNN), ``data`` (COCO loading and the built-in dataset),
``engine`` (training, checkpoints, distributed), ``evaluation`` (size-stratified COCO metrics)
and ``study`` (multi-run comparisons).
"""

__version__ = "0.1.0"
