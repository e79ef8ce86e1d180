"""Shared by the diffusion and scheduler tests: tiny one-hot masks and a tiny random denoiser."""

from __future__ import annotations

import torch

from synthkit.networks import build_denoiser


def tiny_cond(n: int = 2, size: int = 8) -> torch.Tensor:
    """(N, 2, D, H, W) one-hot head/tumour masks, background dropped."""
    c = torch.zeros(n, 2, size, size, size)
    c[:, 0, 1:-1, 1:-1, 1:-1] = 1
    c[:, 0, 3:5, 3:5, 3:5] = 0
    c[:, 1, 3:5, 3:5, 3:5] = 1
    return c


def tiny_denoiser() -> torch.nn.Module:
    """The ``tiny`` preset in eval mode with seeded N(0, 0.05^2) weights (a non-trivial output)."""
    net = build_denoiser("tiny").eval()
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net
