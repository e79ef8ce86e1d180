"""Learning-rate schedule: a pure function of the optimizer step.

The paper (Med-DDPM, Sec. III-B) trains with 1e-5 for the first half and 1e-6 for the
second half. Because the rate depends only on the step number, resuming a run restores the
schedule exactly with nothing extra to save.
"""

from __future__ import annotations

from synthkit.config import TrainConfig


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Learning rate for optimizer step ``step`` (0-based) of a run of ``cfg.steps`` steps.

    ``cfg.lr`` until ``round(cfg.lr_drop_fraction * cfg.steps)``, then ``cfg.lr_final``.
    """
    drop_at = round(cfg.lr_drop_fraction * cfg.steps)
    return cfg.lr if step < drop_at else cfg.lr_final


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr
