"""Multi-head spatial self-attention over all voxels, with PyTorch's fused attention kernel."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SpatialSelfAttention(nn.Module):
    """``x + proj(attention(qkv(groupnorm(x))))`` over the D*H*W voxels as tokens.

    Uses :func:`torch.nn.functional.scaled_dot_product_attention` (flash/memory-efficient
    kernels: the (S, S) attention matrix is never materialised on CPU). The output projection
    is zero-initialised (Dhariwal & Nichol 2021), so a fresh block is the identity.

    forward(x: (N, C, D, H, W)) -> (N, C, D, H, W)
    """

    def __init__(self, channels: int, num_heads: int = 1, norm_groups: int = 32):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"{channels} channels cannot be split into {num_heads} heads")
        self.num_heads = num_heads
        self.norm = nn.GroupNorm(norm_groups, channels, eps=1e-6)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = nn.Linear(channels, channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c = x.shape[:2]
        heads = self.num_heads
        tokens = self.norm(x).flatten(2).transpose(1, 2)  # (N, S, C)
        s = tokens.shape[1]
        qkv = self.qkv(tokens).view(n, s, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])  # (N, heads, S, d)
        out = self.proj(out.transpose(1, 2).reshape(n, s, c))  # (N, S, C)
        return x + out.transpose(1, 2).reshape(x.shape).to(x.dtype)
