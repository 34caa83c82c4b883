"""Training engine: the loop, optimizer and schedule, checkpoints, distributed helpers,
TensorBoard logging, drawing and inference.

Main entry points: :func:`train` (``smalldet train``), :func:`run_inference` (used by
``smalldet evaluate --checkpoint``), :func:`load_model_weights`.
"""

from .checkpoint import CheckpointError, CheckpointManager, load_checkpoint, load_model_weights
from .inference import predict_dataset, run_inference
from .loading import load_trained_model
from .rundir import RunDirError
from .trainer import EvaluationFailed, NonFiniteLossError, Trainer, TrainingInterrupted, train

__all__ = [
    "CheckpointError",
    "CheckpointManager",
    "EvaluationFailed",
    "RunDirError",
    "NonFiniteLossError",
    "Trainer",
    "TrainingInterrupted",
    "load_checkpoint",
    "load_model_weights",
    "load_trained_model",
    "predict_dataset",
    "run_inference",
    "train",
]
