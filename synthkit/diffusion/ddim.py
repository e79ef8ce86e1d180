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
from collections.abc import Callable

import torch

from synthkit.diffusion._checks import Generators, noise_like, start_chain
from synthkit.diffusion.gaussian import GaussianDiffusion, Model
from synthkit.diffusion.prediction import predict_eps_x0
from synthkit.networks.precision import Precision


def ddim_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """The descending steps visited: ``round(linspace(T-1, 0, steps))`` (distinct integers)."""
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"DDIM steps must be in 1..{num_timesteps}, got {steps}")
    if steps == 1:
        return [num_timesteps - 1]
    ts = torch.linspace(num_timesteps - 1, 0, steps, dtype=torch.float64).round().long()
    return [int(v) for v in ts]


@torch.no_grad()
def ddim_sample(
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
    """DDIM over ``steps`` steps (default T). See :func:`synthkit.diffusion.sample`.

    Returns (N, image_channels, D, H, W) float32 in [-1, 1].
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    T = diffusion.num_timesteps
    seq = ddim_timesteps(T, T if steps is None else steps)
    x, bg = start_chain(cond, generator, image_channels, background)
    ab = diffusion.alphas_cumprod
    for i, t in enumerate(seq):
        eps, x0 = predict_eps_x0(
            model, diffusion, x, t, cond, clip_x0=clip_x0, background=bg, autocast=autocast
        )
        a_t = float(ab[t])
        a_prev = float(ab[seq[i + 1]]) if i + 1 < len(seq) else 1.0
        sigma = eta * math.sqrt((1 - a_prev) / (1 - a_t) * (1 - a_t / a_prev))
        x = math.sqrt(a_prev) * x0 + math.sqrt(max(1 - a_prev - sigma**2, 0.0)) * eps
        if sigma > 0:
            x = x + sigma * noise_like(x, generator)
        if progress is not None:
            progress(i + 1, len(seq))
    return x.clamp(-1.0, 1.0)
