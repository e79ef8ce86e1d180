"""Training: the trainers (diffusion, autoencoder, GANs), their loop, EMA, learning-rate schedule
and mixed precision. The checkpoint format and DDP they share with inference live in
:mod:`synthkit.runtime`.

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
    "fit_config_to_cohort": "synthkit.training.configure",
}

__all__ = ["EMA", "Trainer", "TrainingError", "fit_config_to_cohort", "lr_at", "run_trainer", "train"]


__getattr__ = lazy_getattr(__name__, _API)
