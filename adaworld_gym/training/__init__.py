"""Training loops (accelerate) and the shared atomic checkpoint format."""

from adaworld_gym.training.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from adaworld_gym.training.lam import LamTrainConfig, evaluate_lam, train_lam

__all__ = [
    "CheckpointError",
    "LamTrainConfig",
    "evaluate_lam",
    "latest_checkpoint",
    "load_checkpoint",
    "save_checkpoint",
    "train_lam",
]
