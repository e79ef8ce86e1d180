"""Training: the loop, EMA, learning-rate schedule, mixed precision, DDP and atomic checkpoints.

Heavy modules are imported lazily so ``import synthkit.training`` stays cheap.
"""

from __future__ import annotations

from synthkit._lazy import lazy_getattr

_API = {
    "train": "synthkit.training.loop",
    "Trainer": "synthkit.training.loop",
    "TrainingError": "synthkit.training.loop",
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
    "load_weights", "lr_at", "save_checkpoint", "save_weights", "train",
]


__getattr__ = lazy_getattr(__name__, _API)
