"""Resolution changes of the U-Net: strided conv down, nearest-neighbour upsample + conv up."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from synthkit.networks.conv import Conv3d


class Downsample(nn.Module):
    """3x3x3 conv with stride 2. forward(x: (N, C, D, H, W)) -> (N, C, D/2, H/2, W/2)"""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv3d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest x2 then 3x3x3 conv. forward(x: (N, C, D, H, W)) -> (N, C, 2D, 2H, 2W)"""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = Conv3d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))
