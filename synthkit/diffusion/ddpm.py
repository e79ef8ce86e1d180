"""DDPM ancestral sampling (Ho et al. 2020 Algorithm 2; Med-DDPM Algorithm 2 / eq. 3).

``x_{t-1} = mu(x0_hat, x_t) + sigma_t z`` for ``t = T-1..0`` (0-based), ``z ~ N(0, I)`` except
at the last step. ``mu`` is the posterior mean of ``q(x_{t-1} | x_t, x0_hat)``; without
clipping it equals the paper's ``(x_t - beta_t / sqrt(1 - ab_t) eps) / sqrt(alpha_t)`` exactly,
with ``clip_x0``/``background`` it uses the clipped/held x0 (as guided-diffusion does).

Variance: ``sigma_t^2 = beta_t`` as in the paper (the "fixed large" choice). For the posterior
variance ``beta~_t = beta_t (1 - ab_{t-1}) / (1 - ab_t)`` ("fixed small"), use
``sample(..., sampler="ddim", steps=None, eta=1.0)``: DDIM with eta = 1 over all T steps is
exactly ancestral sampling with ``sigma_t^2 = beta~_t``.
"""

from __future__ import annotations

import torch

from synthkit.diffusion._checks import Generators, noise_like
from synthkit.diffusion.scheduler import Denoised, Scheduler, SchedulerOutput


class DDPMScheduler(Scheduler):
    """All T steps, ``sigma_t^2 = beta_t``; ``eta`` is unused."""

    name = "DDPM"

    def set_timesteps(self, steps: int | None) -> None:
        """DDPM visits every step ``T-1..0``; ``steps`` must be None or T."""
        T = self.diffusion.num_timesteps
        if steps is not None and steps != T:
            raise ValueError(f"DDPM runs all {T} steps (got steps={steps}); use sampler='ddim' or 'dpmpp'")
        self._set_grid(list(range(T - 1, -1, -1)))

    def step(
        self,
        model_output: Denoised,
        t: int,
        sample: torch.Tensor,
        generator: Generators | None = None,
    ) -> SchedulerOutput:
        """``x_{t-1} = mu(x0_hat, x_t) + sqrt(beta_t) z`` (no noise at ``t = 0``)."""
        x0 = model_output.x0
        self.position(t)
        tt = torch.full((sample.shape[0],), t, dtype=torch.long, device=sample.device)
        x, _ = self.diffusion.q_posterior(x0, sample, tt)
        if t > 0:
            if generator is None:
                raise ValueError("DDPM steps draw noise: pass a generator")
            x = x + float(self.diffusion.betas[t].sqrt()) * noise_like(sample, generator)
        return SchedulerOutput(x, x0)
