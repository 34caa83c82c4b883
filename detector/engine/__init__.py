"""Training engine: the loop, optimizer and schedule, checkpoints, distributed helpers,
TensorBoard logging, drawing and inference.

Main entry points: :func:`train` (``tools/train.py``), :func:`run_inference` (used by
``tools/evaluate.py --checkpoint``), :func:`load_model_weights`.
"""

from .checkpoint import CheckpointError, CheckpointManager, load_checkpoint, load_model_weights
from .inference import predict_dataset, run_inference
from .trainer import NonFiniteLossError, Trainer, TrainingInterrupted, train

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "NonFiniteLossError",
    "Trainer",
    "TrainingInterrupted",
    "load_checkpoint",
    "load_model_weights",
    "predict_dataset",
    "run_inference",
    "train",
]
