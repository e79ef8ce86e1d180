"""Training: the loop, EMA, learning-rate schedule, mixed precision, DDP and atomic checkpoints.

Heavy modules are imported lazily so ``import synthkit.training`` stays cheap.
"""

from __future__ import annotations

from synthkit._lazy import lazy_getattr

_API = {
    "train": "synthkit.training.loop",
    "Trainer": "synthkit.training.trainer",
    "TrainingError": "synthkit.training.trainer",
    "run_trainer": "synthkit.training.trainer",
    "EMA": "synthkit.training.ema",
    "lr_at": "synthkit.training.lr",
    "save_checkpoint": "synthkit.training.checkpoint",
    "load_checkpoint": "synthkit.training.checkpoint",
    "load_weights": "synthkit.training.checkpoint",
    "save_weights": "synthkit.training.checkpoint",
    "TrainingState": "synthkit.training.checkpoint",
    "fit_config_to_cohort": "synthkit.training.configure",
}

__all__ = [
    "EMA", "Trainer", "TrainingError", "TrainingState", "fit_config_to_cohort", "load_checkpoint",
    "load_weights", "lr_at", "run_trainer", "save_checkpoint", "save_weights", "train",
]


__getattr__ = lazy_getattr(__name__, _API)
