"""A plain 3D U-Net for the downstream segmentation benchmark.

After Çiçek et al., "3D U-Net: Learning Dense Volumetric Segmentation from Sparse Annotation"
(MICCAI 2016), the network the Med-DDPM paper trains for tumour segmentation (Table II): an
analysis path of levels with two 3x3x3 convolutions, each followed by batch normalisation and
ReLU, then 2x2x2 max pooling; a synthesis path of 2x2x2 transposed convolutions (stride 2),
concatenation with the same-level features (skip connection) and two 3x3x3 convolutions; a final
1x1x1 convolution to ``out_channels`` logits. Channels double at every level
(``base_channels * 2**level``).

Inputs whose spatial size is not a multiple of ``2**(levels-1)`` are padded with zeros inside
``forward`` and the logits are cropped back, so any shape works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Module):
    """Two (3x3x3 conv -> BatchNorm -> ReLU) blocks: (N, C_in, D, H, W) -> (N, C_out, D, H, W)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.Conv3d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv3d(out_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm3d(out_channels),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UNet3D(nn.Module):
    """Plain 3D U-Net: ``(N, in_channels, D, H, W)`` -> logits ``(N, out_channels, D, H, W)``.

    Args:
        in_channels: image channels (modalities).
        out_channels: 1 for the paper's binary (sigmoid + BCE) tumour segmentation.
        base_channels: channels at the first level (Çiçek et al. use 32; 8 for unit tests).
        levels: resolution levels (Çiçek et al. use 4: three poolings).
        generator: if given, weights are initialised from it (He-normal), so two models built
            with equally seeded generators are identical and the global RNG is not touched.
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        base_channels: int = 16,
        levels: int = 4,
        *,
        generator: torch.Generator | None = None,
    ):
        super().__init__()
        if levels < 1:
            raise ValueError(f"levels must be >= 1, got {levels}")
        if in_channels < 1 or out_channels < 1 or base_channels < 1:
            raise ValueError("in_channels, out_channels and base_channels must be positive")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.levels = levels
        # Layer constructors draw default weights from the global RNG; with a generator, fork
        # (save and restore) it so building the network leaves the global state untouched.
        with torch.random.fork_rng(devices=[], enabled=generator is not None):
            self._build(in_channels, out_channels, base_channels, levels)
        self.reset_parameters(generator)

    def _build(self, in_channels: int, out_channels: int, base_channels: int, levels: int) -> None:
        widths = [base_channels * 2**i for i in range(levels)]
        self.down = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.down.append(DoubleConv(c, w))
            c = w
        self.up = nn.ModuleList()
        self.up_conv = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose3d(c, w, kernel_size=2, stride=2))
            self.up_conv.append(DoubleConv(2 * w, w))
            c = w
        self.head = nn.Conv3d(c, out_channels, kernel_size=1)

    @property
    def size_multiple(self) -> int:
        """Spatial sizes are padded internally to a multiple of this."""
        return 2 ** (self.levels - 1)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He-normal convolutions, zero biases, unit/zero batch-norm affine parameters."""
        for m in self.modules():
            if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu", generator=generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (N, C_in, D, H, W) -> logits (N, C_out, D, H, W)."""
        if x.dim() != 5 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input (N, {self.in_channels}, D, H, W), got {tuple(x.shape)}"
            )
        size = x.shape[2:]
        m = self.size_multiple
        pad = [(-s) % m for s in size]
        if any(pad):
            # F.pad takes pairs from the last axis backwards.
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        skips = []
        for i, block in enumerate(self.down):
            if i > 0:
                x = F.max_pool3d(x, 2)
            x = block(x)
            skips.append(x)
        skips.pop()
        for up, conv in zip(self.up, self.up_conv, strict=True):
            x = up(x)
            x = conv(torch.cat([x, skips.pop()], dim=1))
        x = self.head(x)
        return x[:, :, : size[0], : size[1], : size[2]]
