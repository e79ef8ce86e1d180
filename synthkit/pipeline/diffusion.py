"""The Med-DDPM kind (``model_type: "ddpm"``): a denoiser and a Gaussian diffusion schedule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from synthkit import noise as noise_rule
from synthkit.config import RunConfig
from synthkit.errors import UsageError
from synthkit.pipeline.pipeline import Pipeline, Progress
from synthkit.pipeline.registry import register_kind


@register_kind("ddpm")
class DiffusionPipeline(Pipeline):
    """Med-DDPM (Dorjsembe et al. 2024): ``sampler`` ``"ddpm"`` runs all T steps (Ho et al.
    2020 Algorithm 2), ``"ddim"`` any ``steps`` (Song et al. 2021) with stochasticity ``eta``."""

    @classmethod
    def build_network(cls, cfg: RunConfig) -> torch.nn.Module:
        from synthkit.networks import build_denoiser

        return build_denoiser(cfg.model)

    @classmethod
    def build_schedule(cls, cfg: RunConfig) -> Any:
        from synthkit.diffusion import GaussianDiffusion

        return GaussianDiffusion(cfg.diffusion)

    def check_sampling(self, sampler: str | None, steps: int | None, eta: float) -> tuple[str, int | None]:
        """UsageError for a sampler, steps or eta the run cannot take; returns (sampler, the
        number of network calls it will make)."""
        from synthkit.diffusion import SAMPLERS, make_scheduler

        sampler = str(sampler or "ddpm")
        T = self.diffusion.num_timesteps
        if sampler not in SAMPLERS:
            raise UsageError(f"--sampler must be one of {', '.join(SAMPLERS)}, not {sampler!r}")
        if steps is not None and not 1 <= steps <= T:
            raise UsageError(f"--steps must be in 1..{T} for this model")
        if sampler == "ddpm" and steps not in (None, T):
            raise UsageError("--steps applies to --sampler ddim or dpmpp (ddpm always runs all T steps)")
        try:
            scheduler = make_scheduler(sampler, self.diffusion, steps=steps, eta=eta)
        except ValueError as e:
            raise UsageError(f"--sampler {sampler}: {e}") from None
        return sampler, len(scheduler.timesteps)

    @torch.no_grad()
    def sample_batch(self, cond: torch.Tensor, seeds: Sequence[int], *, sampler: str = "ddpm",
                     steps: int | None = None, eta: float = 0.0, background: Sequence[bool] | None = None,
                     progress: Progress | None = None, guidance: float = 1.0) -> torch.Tensor:
        """One chain for the whole batch (the denoiser runs once per step on ``(B, C + K, ...)``);
        volume ``i``'s x_T and noise come only from its own generator (``seeds[i]``)."""
        from synthkit.diffusion import sample

        self._check_batch(cond, seeds, background)
        c = cond.to(self.device)
        gens = [noise_rule.cpu_generator(int(s)) for s in seeds]
        out = sample(self.model, self.diffusion, c, sampler=sampler, steps=steps, eta=eta, generator=gens,
                     image_channels=self.image_channels, background=self.background_mask(c, background),
                     progress=progress, autocast=self.precision, guidance=guidance)
        return out.float().cpu()
