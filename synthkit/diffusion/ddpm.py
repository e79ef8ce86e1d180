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

from collections.abc import Callable

import torch

from synthkit.diffusion._checks import Generators, noise_like, start_chain
from synthkit.diffusion.gaussian import GaussianDiffusion, Model
from synthkit.diffusion.prediction import predict_eps_x0
from synthkit.networks.precision import Precision


@torch.no_grad()
def ddpm_sample(
    model: Model,
    diffusion: GaussianDiffusion,
    cond: torch.Tensor,
    *,
    steps: int | None = None,
    eta: float = 0.0,
    generator: Generators,
    image_channels: int,
    clip_x0: bool = True,
    background: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
    autocast: Precision | None = None,
) -> torch.Tensor:
    """Ancestral sampling over all T steps. See :func:`synthkit.diffusion.sample` for the
    arguments; ``steps`` must be None or T (use DDIM for fewer) and ``eta`` is unused.

    Returns (N, image_channels, D, H, W) float32 in [-1, 1].
    """
    T = diffusion.num_timesteps
    if steps is not None and steps != T:
        raise ValueError(f"DDPM runs all {T} steps (got steps={steps}); use sampler='ddim'")
    x, bg = start_chain(cond, generator, image_channels, background)
    betas = diffusion.betas
    for i, t in enumerate(range(T - 1, -1, -1)):
        _, x0 = predict_eps_x0(
            model, diffusion, x, t, cond, clip_x0=clip_x0, background=bg, autocast=autocast
        )
        tt = torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)
        mean, _ = diffusion.q_posterior(x0, x, tt)
        if t > 0:
            x = mean + float(betas[t].sqrt()) * noise_like(x, generator)
        else:
            x = mean
        if progress is not None:
            progress(i + 1, T)
    return x.clamp(-1.0, 1.0)
