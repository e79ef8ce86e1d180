"""DDIM sampling (Song, Meng & Ermon 2021, eq. 12) over any number of steps.

``x_prev = sqrt(ab_prev) x0_hat + sqrt(1 - ab_prev - sigma^2) eps_hat + sigma z`` with
``sigma = eta * sqrt((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev))``. ``eta = 0`` is the
deterministic sampler (the only randomness is x_T); ``eta = 1`` over all T steps is DDPM with
the posterior variance.

Timestep spacing ("linspace", with both ends): ``round(linspace(T-1, 0, steps))``, so the chain
always starts at the noisiest step T-1 and ends at step 0, whose x0 is returned
(``ab_prev = 1`` after the last step). ``steps=None`` means all T steps.
"""

from __future__ import annotations

import math

import torch

from synthkit.diffusion._checks import Generators, noise_like
from synthkit.diffusion.gaussian import GaussianDiffusion
from synthkit.diffusion.scheduler import Denoised, Scheduler, SchedulerOutput, spaced_timesteps


def ddim_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """The descending steps visited: ``round(linspace(T-1, 0, steps))`` (distinct integers)."""
    return spaced_timesteps(num_timesteps, steps, "DDIM")


class DDIMScheduler(Scheduler):
    """DDIM with stochasticity ``eta >= 0`` on the linspace grid."""

    name = "DDIM"

    def __init__(self, diffusion: GaussianDiffusion, *, eta: float = 0.0):
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        super().__init__(diffusion, eta=eta)

    def step(
        self,
        model_output: Denoised,
        t: int,
        sample: torch.Tensor,
        generator: Generators | None = None,
    ) -> SchedulerOutput:
        """Song et al. 2021 eq. 12 from ``t`` to the next grid step (clean data after the last)."""
        eps, x0 = model_output
        a_prev = self.alpha_bar_next(t)
        a_t = float(self.diffusion.alphas_cumprod[t])
        sigma = self.eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            if generator is None:
                raise ValueError("DDIM with eta > 0 draws noise: pass a generator")
            x = x + sigma * noise_like(x, generator)
        return SchedulerOutput(x, x0)
