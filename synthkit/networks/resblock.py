"""Residual block with timestep conditioning (Ho et al. 2020, 3D as in Med-DDPM Fig. 1)."""

from __future__ import annotations

import torch
from torch import nn

from synthkit.networks.conv import Conv3d
from synthkit.networks.norm import GroupNormSiLU


class ResBlock(nn.Module):
    """``x + conv(silu(gn(conv(silu(gn(x))) + proj(emb))))``, with a 1x1x1 skip conv when the
    channel count changes. The second conv is zero-initialised so a fresh block is the identity
    (up to the skip projection).

    forward(x: (N, C_in, D, H, W), emb: (N, E) = silu(time embedding)) -> (N, C_out, D, H, W)
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        embed_dim: int,
        norm_groups: int = 32,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.norm1 = GroupNormSiLU(norm_groups, in_channels)
        self.conv1 = Conv3d(in_channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(embed_dim, out_channels)
        self.norm2 = GroupNormSiLU(norm_groups, out_channels)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = Conv3d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip: nn.Module = (
            nn.Identity() if in_channels == out_channels else Conv3d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``emb`` is (N, E), or (1, E) when the whole batch shares one timestep."""
        e = self.emb_proj(emb)
        if e.shape[0] == 1:  # one embedding for the batch: fold it into conv1's bias
            h = self.conv1(self.norm1(x), bias=self.conv1.bias + e[0])
        else:
            # conv outputs are fresh tensors that autograd does not keep: add in place.
            h = self.conv1(self.norm1(x))
            h = h.add_(e.to(h.dtype)[:, :, None, None, None])
        h = self.conv2(self.dropout(self.norm2(h)))
        return h.add_(self.skip(x).to(h.dtype))
