"""The GAN baseline kinds (``model_type: "pix2pix"`` / ``"discogan"``): one generator pass.

Training lives in :mod:`synthkit.training.gan`; this module only samples. The run's
``model.safetensors`` holds the EMA weights of the mask -> image generator ``"g"``
(:func:`synthkit.networks.gan.build_generator`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import torch

from synthkit import noise as noise_rule
from synthkit.config import RunConfig
from synthkit.errors import UsageError
from synthkit.pipeline.pipeline import Pipeline, Progress
from synthkit.pipeline.registry import register_kind


@dataclasses.dataclass(frozen=True)
class SinglePass:
    """Stands where a diffusion schedule stands for a GAN: one forward pass, ``num_timesteps == 1``
    (so sampling manifests record ``steps: 1``)."""

    num_timesteps: int = 1


def build_sampling_network(cfg: RunConfig) -> torch.nn.Module:
    """The mask -> image generator of a GAN run (the architecture of ``model.safetensors``)."""
    from synthkit.networks.gan import build_generator

    return build_generator(cfg.gan, cfg.model.mask_classes, cfg.model.image_channels)


@register_kind("pix2pix", "discogan")
class GanPipeline(Pipeline):
    """A loaded GAN baseline; the same interface as every :class:`Pipeline`.

    A volume is one generator pass over the one-hot mask. With ``gan.sample_dropout`` (default,
    as Isola et al. 2017) dropout stays on as the noise source, drawn from the volume's own
    seed, so different seeds give (typically slightly) different volumes and the same seed the
    same volume; without it every seed gives the same volume. ``sampler``, ``steps`` and ``eta``
    are accepted for interface compatibility and ignored. ``background`` holds the voxels
    outside the head at -1, as for the diffusion model.
    """

    @classmethod
    def build_network(cls, cfg: RunConfig) -> torch.nn.Module:
        return build_sampling_network(cfg)

    @classmethod
    def build_schedule(cls, cfg: RunConfig) -> Any:
        return SinglePass()

    def check_sampling(self, sampler: str | None, steps: int | None, eta: float) -> tuple[str, int | None]:
        if sampler is not None or steps is not None or eta != 0.0:
            raise UsageError(f"--sampler, --steps and --eta apply to diffusion models; this run is a "
                             f"{self.kind} GAN (one generator pass per volume)")
        return self.kind, 1

    @torch.no_grad()
    def sample_batch(self, cond: torch.Tensor, seeds: Sequence[int], *, sampler: str = "ddpm",
                     steps: int | None = None, eta: float = 0.0, background: Sequence[bool] | None = None,
                     progress: Progress | None = None, guidance: float = 1.0) -> torch.Tensor:
        """One generator pass on ``(B, K, ...)``; volume ``i``'s dropout noise comes only from
        its own generator (``seeds[i]``). ``guidance`` must be 1 (a GAN has no unconditional twin)."""
        if guidance != 1.0:
            raise UsageError("--guidance is for diffusion models trained with --cond-drop, not GAN baselines")
        self._check_batch(cond, seeds, background)
        c = cond.to(self.device, torch.float32)
        gens = [noise_rule.cpu_generator(int(s)) for s in seeds] \
            if self.config.gan.sample_dropout else None
        from synthkit.runtime.precision import autocast_context

        with autocast_context(c.device, self.precision):
            out = self.model(c, generator=gens).float()
        bg = self.background_mask(c, background)
        if bg is not None:
            out = torch.where(bg, torch.full_like(out, -1.0), out)
        if progress is not None:
            progress(1, 1)
        return out.cpu()
