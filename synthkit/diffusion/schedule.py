"""Noise schedules: the betas of a discrete Gaussian diffusion with T steps.

Index ``t = 0..T-1`` in code is step ``t + 1`` of the papers (``alpha_bar[0]`` is the first
noising step). Computed in float64.
"""

from __future__ import annotations

import math

import torch


def cosine_alpha_bar(t: torch.Tensor, timesteps: int, s: float = 0.008) -> torch.Tensor:
    """Closed form ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos(((t/T + s) / (1 + s)) * pi/2)**2``.

    Nichol & Dhariwal 2021, eq. 17 (Med-DDPM eq. 2). ``t`` is continuous in ``[0, T]``.
    """
    f = lambda u: torch.cos((u / timesteps + s) / (1 + s) * math.pi / 2) ** 2
    return f(t.to(torch.float64)) / f(torch.zeros((), dtype=torch.float64))


def cosine_betas(timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """``beta_t = min(1 - alpha_bar(t+1) / alpha_bar(t), max_beta)`` for ``t = 0..T-1``.

    The clip at 0.999 (Nichol & Dhariwal 2021) only affects the last step or two, where
    ``alpha_bar`` reaches 0. Returns (T,) float64.
    """
    steps = torch.arange(timesteps + 1, dtype=torch.float64)
    ab = cosine_alpha_bar(steps, timesteps, s)
    return (1 - ab[1:] / ab[:-1]).clamp(max=max_beta)


def linear_betas(timesteps: int) -> torch.Tensor:
    """Ho et al. 2020's linear schedule, rescaled to T steps: ``beta`` from ``1e-4 * 1000/T`` to
    ``0.02 * 1000/T`` (the rescaling of Nichol & Dhariwal 2021 keeps ``alpha_bar_T`` ~ 0).
    Returns (T,) float64."""
    scale = 1000.0 / timesteps
    return torch.linspace(scale * 1e-4, scale * 0.02, timesteps, dtype=torch.float64)


def make_betas(schedule: str, timesteps: int, cosine_s: float = 0.008) -> torch.Tensor:
    """Betas (T,) float64 for the named schedule (``"cosine"`` or ``"linear"``)."""
    if timesteps < 1:
        raise ValueError(f"timesteps must be >= 1, got {timesteps}")
    if schedule == "cosine":
        return cosine_betas(timesteps, cosine_s)
    if schedule == "linear":
        return linear_betas(timesteps)
    raise ValueError(f"unknown noise schedule {schedule!r}; use 'cosine' or 'linear'")
