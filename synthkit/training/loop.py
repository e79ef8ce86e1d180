"""``train()``: one call trains a Med-DDPM model (or, by ``cfg.model_type``, a GAN baseline).

The loop itself is :class:`synthkit.training.trainer.Trainer` (Algorithm 1 of Med-DDPM with
EMA, accumulation, clipping, mixed precision, DDP, atomic checkpoints and exact resume); its
construction half is :class:`synthkit.training.setup.TrainerSetup`.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthkit.config import RunConfig
from synthkit.training.trainer import Trainer, run_trainer

__all__ = ["train"]


def train(cohort: Any, run_dir: str | Path, cfg: RunConfig | None = None, *, resume: bool = False,
          device: str = "cpu", progress: Any = True, cache_dir: str | Path | None = None,
          on_note: Callable[[str], None] | None = None) -> Path:
    """Train a Med-DDPM model on ``cohort`` into ``run_dir`` (see synthkit.training.trainer); returns ``run_dir``.

    ``cfg``: a :class:`RunConfig` (default: the ``small`` preset, other settings default);
    channels and mask classes are taken from the cohort. ``progress``: True for a rich
    progress bar on a terminal, False/None for none, or your own rich ``Progress``.
    Works the same under ``torchrun`` (DDP): every rank calls it; rank 0 writes the files.
    """
    if cfg is None:
        from synthkit.config import model_config

        cfg = RunConfig(model=model_config("small"), preset="small")
    if cfg.model_type == "latent":  # the run folder must hold autoencoder/ (attach_autoencoder)
        from synthkit.training.autoencoder_latent import LatentTrainer

        return run_trainer(LatentTrainer, cohort, run_dir, cfg, resume=resume, device=device, progress=progress,
                           cache_dir=cache_dir, on_note=on_note)
    if cfg.model_type != "ddpm":
        from synthkit.training.gan import train_gan

        return train_gan(cohort, run_dir, cfg, resume=resume, device=device, progress=progress,
                         cache_dir=cache_dir, on_note=on_note)
    return run_trainer(Trainer, cohort, run_dir, cfg, resume=resume, device=device, progress=progress,
                       cache_dir=cache_dir, on_note=on_note)
