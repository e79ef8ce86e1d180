"""Sinusoidal timestep embedding (Vaswani et al. 2017, as used by Ho et al. 2020) and its MLP."""

from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal features of integer timesteps.

    Args:
        t: (N,) timesteps (any numeric dtype).
        dim: embedding width.
    Returns:
        (N, dim) float32: ``[cos(t * f_k), sin(t * f_k)]`` with ``f_k = max_period**(-k/half)``,
        zero-padded by one column when ``dim`` is odd.
    """
    if t.ndim != 1:
        raise ValueError(f"timesteps must be a 1-D tensor (N,), got shape {tuple(t.shape)}")
    half = dim // 2
    k = torch.arange(half, dtype=torch.float32, device=t.device)
    freqs = torch.exp(-math.log(max_period) * k / half)
    args = t.to(torch.float32)[:, None] * freqs[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class TimestepMLP(nn.Sequential):
    """``Linear(base, 4*base) -> SiLU -> Linear(4*base, 4*base)`` on the sinusoidal features.

    forward(t: (N,)) -> (N, embed_dim)
    """

    def __init__(self, base_channels: int, embed_dim: int):
        super().__init__(
            nn.Linear(base_channels, embed_dim), nn.SiLU(), nn.Linear(embed_dim, embed_dim)
        )
        self.base_channels = base_channels

    def forward(self, t: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return super().forward(timestep_embedding(t, self.base_channels))
