"""3D networks of the GAN baselines: Pix2Pix (Isola et al., CVPR 2017) and DiscoGAN (Kim et al.,
ICML 2017), adapted to volumes as in the Med-DDPM paper.

* :class:`UNetGenerator3D`: Isola et al.'s U-Net generator in 3D. ``depth`` stride-2 4^3
  convolutions down, transposed convolutions up, a skip connection at every level::

      x (N, C_in, D, H, W) -> conv -> [LReLU conv norm] x (depth-2) -> LReLU conv   (bottleneck)
         -> [ReLU convT norm (dropout)] x (depth-1), each output concatenated with its encoder twin
         -> ReLU convT tanh -> (N, C_out, D, H, W) in [-1, 1]

  No norm at the outermost and innermost layers (as Isola et al.). Widths
  ``base * min(2**i, max_mult)``. Dropout in up to three decoder blocks next to the bottleneck
  is the generator's only noise (Isola et al. keep it at test time). It is drawn from an
  explicit ``torch.Generator``: pass ``generator=`` to switch it on (training and, if wanted,
  sampling); without one the network is deterministic.
* :class:`PatchDiscriminator3D`: Isola et al.'s PatchGAN in 3D: ``layers`` stride-2 4^3
  convolutions, one stride-1, and a 1-channel stride-1 output: one real/fake score per patch,
  ``(N, 1, d', h', w')`` with ``d' = D / 2**layers - 2``.
* :func:`build_gan`: the networks of one baseline in an ``nn.ModuleDict``:
  Pix2Pix ``{"g": mask->image, "d": D(cat[mask, image])}`` (conditional discriminator);
  DiscoGAN ``{"g": G_AB mask->image, "g_ba": G_BA image->mask, "d": D_B(image), "d_a": D_A(mask)}``.
  ``"g"`` is always the mask -> image generator used for sampling.

Mask input: one-hot ``(N, K, D, H, W)`` with background dropped (``K`` = mask classes).
Norms: ``"instance"`` (default; no running statistics, so train and eval modes compute the
same) or ``"batch"`` (eval mode then uses running statistics, unlike Isola et al.'s test time).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from synthkit import noise as noise_rule
from synthkit.config import GanConfig


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "instance":
        return nn.InstanceNorm3d(channels, affine=True, track_running_stats=False)
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    raise ValueError(f"norm must be 'instance' or 'batch', not {kind!r}")


def seeded_dropout(x: torch.Tensor, p: float,
                   generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """Inverted dropout with its mask drawn from ``generator``; identity when it is None or p == 0.

    ``generator``: one for the whole batch, or a sequence of N (one per sample of ``x``
    ``(N, ...)``): sample ``i``'s mask then comes from generator ``i`` alone, exactly as a
    batch of one would draw it (sampling batched volumes).
    """
    if generator is None or p <= 0.0:
        return x
    if isinstance(generator, torch.Generator):
        keep = noise_rule.rand(x.shape, generator, x.device) >= p
    else:
        if len(generator) != x.shape[0]:
            raise ValueError(f"got {len(generator)} generators for a batch of {x.shape[0]}")
        one = (1, *x.shape[1:])
        keep = torch.cat([noise_rule.rand(one, g, x.device) for g in generator]) >= p
    return x * keep.to(x.dtype) / (1.0 - p)


class _Down(nn.Module):
    """(LeakyReLU 0.2) -> Conv3d 4^3 stride 2 -> (norm): halves D, H, W."""

    def __init__(self, cin: int, cout: int, *, act: bool, norm: str | None):
        super().__init__()
        self.act = act
        self.conv = nn.Conv3d(cin, cout, 4, stride=2, padding=1, bias=norm != "batch")
        self.norm = _norm(norm, cout) if norm else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act:
            x = F.leaky_relu(x, 0.2)
        return self.norm(self.conv(x))


class _Up(nn.Module):
    """ReLU -> ConvTranspose3d 4^3 stride 2 -> norm -> dropout (or tanh at the outermost)."""

    def __init__(self, cin: int, cout: int, *, norm: str | None, dropout: float):
        super().__init__()
        self.conv = nn.ConvTranspose3d(cin, cout, 4, stride=2, padding=1, bias=norm != "batch")
        self.norm = _norm(norm, cout) if norm else None
        self.dropout = dropout

    def forward(self, x: torch.Tensor,
                generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
        x = self.conv(F.relu(x))
        if self.norm is None:  # outermost
            return torch.tanh(x)
        return seeded_dropout(self.norm(x), self.dropout, generator)


class UNetGenerator3D(nn.Module):
    """Isola et al.'s U-Net generator in 3D (see the module docstring).

    ``forward(x (N, in_channels, D, H, W), generator=None) -> (N, out_channels, D, H, W)`` in
    [-1, 1]; ``D, H, W`` divisible by ``2**depth``.
    """

    def __init__(self, in_channels: int, out_channels: int, *, base_channels: int = 64, depth: int = 4,
                 max_mult: int = 8, norm: str = "instance", dropout: float = 0.5, dropout_blocks: int = 3):
        super().__init__()
        if depth < 2:
            raise ValueError(f"U-Net depth must be at least 2, got {depth}")
        ch = [base_channels * min(2**i, max_mult) for i in range(depth)]
        self.depth = depth
        self.downs = nn.ModuleList()
        for i in range(depth):
            cin = in_channels if i == 0 else ch[i - 1]
            inner_or_outer = i in (0, depth - 1)
            self.downs.append(_Down(cin, ch[i], act=i > 0, norm=None if inner_or_outer else norm))
        # ups[j] brings level depth-1-j back to level depth-2-j; ups[-1] is the outermost
        self.ups = nn.ModuleList()
        for j in range(depth):
            level = depth - 1 - j
            cin = ch[level] if j == 0 else 2 * ch[level]
            if level == 0:
                self.ups.append(_Up(cin, out_channels, norm=None, dropout=0.0))
            else:
                self.ups.append(_Up(cin, ch[level - 1], norm=norm, dropout=dropout if j < dropout_blocks else 0.0))

    @property
    def downsample_factor(self) -> int:
        return 2**self.depth

    def forward(self, x: torch.Tensor,
                generator: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
        if any(int(s) % self.downsample_factor for s in x.shape[2:]):
            raise ValueError(f"input {tuple(x.shape[2:])} must be divisible by {self.downsample_factor}")
        skips = []
        for down in self.downs:
            x = down(x)
            skips.append(x)
        skips.pop()  # the bottleneck itself
        for j, up in enumerate(self.ups):
            x = up(x, generator)
            if j < self.depth - 1:
                x = torch.cat([x, skips.pop()], dim=1)
        return x


class PatchDiscriminator3D(nn.Module):
    """Isola et al.'s PatchGAN in 3D: ``(N, in_channels, D, H, W) -> (N, 1, d', h', w')`` raw
    scores (logits), ``d' = D // 2**layers - 2`` (see :func:`patch_shape`)."""

    def __init__(self, in_channels: int, *, base_channels: int = 64, layers: int = 3, norm: str = "instance"):
        super().__init__()
        if layers < 1:
            raise ValueError(f"PatchGAN needs at least one stride-2 layer, got {layers}")
        mods: list[nn.Module] = [nn.Conv3d(in_channels, base_channels, 4, stride=2, padding=1),
                                 nn.LeakyReLU(0.2)]
        cout = base_channels
        for n in range(1, layers + 1):
            cin, cout = cout, base_channels * min(2**n, 8)
            stride = 2 if n < layers else 1
            mods += [nn.Conv3d(cin, cout, 4, stride=stride, padding=1, bias=norm != "batch"),
                     _norm(norm, cout), nn.LeakyReLU(0.2)]
        mods.append(nn.Conv3d(cout, 1, 4, stride=1, padding=1))
        self.net = nn.Sequential(*mods)
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def patch_shape(shape: Sequence[int], layers: int) -> tuple[int, ...]:
    """Spatial shape of the PatchGAN output for an input of spatial ``shape``."""
    out = []
    for s in shape:
        s = int(s)
        for _ in range(layers):
            s = (s + 2 - 4) // 2 + 1
        out.append(s - 2)  # two stride-1 4^3 convolutions with padding 1
    return tuple(out)


def check_gan_shape(cfg: GanConfig, shape: Sequence[int]) -> str | None:
    """Why ``shape`` cannot be used with ``cfg`` (None when it can)."""
    factor = 2**cfg.depth
    if any(int(s) % factor for s in shape):
        return (f"the volume {' '.join(map(str, shape))} must be divisible by {factor} for this GAN "
                f"(its U-Net halves it {cfg.depth} times)")
    # the PatchGAN's last normalised map is one voxel larger than its output; norms need > 1 voxel
    if min(patch_shape(shape, cfg.disc_layers)) < 1 or min(s // 2**cfg.disc_layers for s in shape) < 3:
        return (f"the volume {' '.join(map(str, shape))} is too small for a PatchGAN with "
                f"{cfg.disc_layers} stride-2 layers (each side must be at least {3 * 2**cfg.disc_layers})")
    return None


def _init_weights(module: nn.Module) -> None:
    """Isola et al.'s initialisation: conv weights N(0, 0.02), norm scales N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv3d, nn.ConvTranspose3d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, (nn.InstanceNorm3d, nn.BatchNorm3d)) and m.weight is not None:
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


def build_generator(cfg: GanConfig, in_channels: int, out_channels: int) -> UNetGenerator3D:
    """A U-Net generator ``in_channels -> out_channels`` (initialised from the global torch RNG:
    wrap in ``torch.random.fork_rng`` + ``manual_seed`` for a seeded, side-effect-free init)."""
    net = UNetGenerator3D(in_channels, out_channels, base_channels=cfg.base_channels, depth=cfg.depth,
                          max_mult=cfg.max_mult, norm=cfg.norm, dropout=cfg.dropout)
    _init_weights(net)
    return net


def build_discriminator(cfg: GanConfig, in_channels: int) -> PatchDiscriminator3D:
    net = PatchDiscriminator3D(in_channels, base_channels=cfg.disc_channels, layers=cfg.disc_layers, norm=cfg.norm)
    _init_weights(net)
    return net


def build_gan(model_type: str, cfg: GanConfig, image_channels: int, mask_classes: int) -> nn.ModuleDict:
    """All networks of one baseline (see the module docstring for the keys)."""
    c, k = int(image_channels), int(mask_classes)
    if model_type == "pix2pix":
        return nn.ModuleDict({"g": build_generator(cfg, k, c), "d": build_discriminator(cfg, k + c)})
    if model_type == "discogan":
        return nn.ModuleDict({"g": build_generator(cfg, k, c), "g_ba": build_generator(cfg, c, k),
                              "d": build_discriminator(cfg, c), "d_a": build_discriminator(cfg, k)})
    raise ValueError(f"model_type must be 'pix2pix' or 'discogan', not {model_type!r}")
