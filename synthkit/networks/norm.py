"""GroupNorm followed by SiLU in one module (one fewer activation-sized tensor per call)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class GroupNormSiLU(nn.GroupNorm):
    """``silu(group_norm(x))`` with the SiLU applied in place on the fresh normalised tensor.

    The in-place SiLU is autograd-safe: group_norm's backward keeps its *input*, not its output.
    Parameters are named like :class:`torch.nn.GroupNorm` (``weight``, ``bias``).

    forward(x: (N, C, D, H, W)) -> (N, C, D, H, W)
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-6):
        super().__init__(num_groups, num_channels, eps=eps, affine=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
        return F.silu(h, inplace=True)
