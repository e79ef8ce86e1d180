"""A KL-regularised 3D convolutional autoencoder for latent diffusion (LDM: Rombach et al. 2022,
"High-Resolution Image Synthesis with Latent Diffusion Models", Sec. 3.1 and App. G; MAISI's
VAE is the same design for CT).

Shapes, for ``channels = (c0, c1, c2)`` (``L = len(channels)``, factor ``f = 2**(L-1)``, 4 here)::

    x        (N, C_img, D, H, W)              D, H, W divisible by f; intensities in [-1, 1]
    encode   -> mean, logvar (N, C_lat, D/f, H/f, W/f) each   (a diagonal Gaussian posterior)
    decode   z (N, C_lat, D/f, H/f, W/f) -> (N, C_img, D, H, W)

Encoder: 3^3 conv to ``c0``; per level ``i``: ``num_res_blocks`` residual blocks at width
``channels[i]``, then (except at the last level) a stride-2 3^3 conv; one more residual block;
GroupNorm + SiLU; 3^3 conv to ``2 * C_lat`` (mean and log-variance). The decoder mirrors it with
nearest-neighbour x2 upsampling + a 3^3 conv that narrows to the next (finer) level's width. No attention and no padding tricks: the network is
fully convolutional, so it trains on random crops and runs on any grid divisible by ``f``.

The KL term is ``0.5 * (mean^2 + exp(logvar) - 1 - logvar)`` averaged over latent elements
(Kingma & Welling 2014); training weights it lightly so the latent keeps detail. Latents are
brought to unit variance for diffusion by a scale factor recorded with the weights (LDM's
``scale_factor = 1 / std(z)``), applied outside this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from synthkit import noise as noise_rule
from synthkit.config import AutoencoderConfig
from synthkit.networks.conv import Conv3d
from synthkit.networks.norm import GroupNormSiLU
from synthkit.networks.resample import Downsample

LOGVAR_RANGE = (-30.0, 20.0)  # clamp as LDM does, so exp() stays finite


class AEResBlock(nn.Module):
    """``x + conv(silu(gn(conv(silu(gn(x))))))`` with a 1^3 skip conv when widths differ; the
    second conv starts at zero so a fresh block is the identity (up to the skip projection).

    forward(x: (N, C_in, D, H, W)) -> (N, C_out, D, H, W)
    """

    def __init__(self, in_channels: int, out_channels: int, norm_groups: int):
        super().__init__()
        self.norm1 = GroupNormSiLU(norm_groups, in_channels)
        self.conv1 = Conv3d(in_channels, out_channels, 3, padding=1)
        self.norm2 = GroupNormSiLU(norm_groups, out_channels)
        self.conv2 = Conv3d(out_channels, out_channels, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.skip: nn.Module = nn.Identity() if in_channels == out_channels else Conv3d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(self.norm2(self.conv1(self.norm1(x))))
        return h.add_(self.skip(x).to(h.dtype))


class Upsample(nn.Module):
    """Nearest x2, then a 3^3 conv that also narrows to the next level's width (so the
    full-resolution conv runs at the narrow width: 2x cheaper than keeping the wide one).

    forward(x: (N, C_in, D, H, W)) -> (N, C_out, 2D, 2H, 2W)
    """

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = Conv3d(in_channels, out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Encoder(nn.Module):
    """forward(x: (N, C_img, D, H, W)) -> (N, 2 * C_lat, D/f, H/f, W/f) (mean, logvar stacked)."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        ch, g = cfg.channels, cfg.norm_groups
        self.conv_in = Conv3d(cfg.image_channels, ch[0], 3, padding=1)
        layers: list[nn.Module] = []
        width = ch[0]
        for i, c in enumerate(ch):
            for _ in range(cfg.num_res_blocks):
                layers.append(AEResBlock(width, c, g))
                width = c
            if i < len(ch) - 1:
                layers.append(Downsample(width))
        layers.append(AEResBlock(width, width, g))
        self.body = nn.Sequential(*layers)
        self.norm_out = GroupNormSiLU(g, width)
        self.conv_out = Conv3d(width, 2 * cfg.latent_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.norm_out(self.body(self.conv_in(x))))


class Decoder(nn.Module):
    """forward(z: (N, C_lat, D/f, H/f, W/f), mask: (N, K, D, H, W) | None) -> (N, C_img, D, H, W).

    With ``cfg.mask_channels = K`` the one-hot mask is average-pooled to each decoder level (f, ...,
    2, 1) and added through a 3^3 conv after the level's first layer (``conv_in``, then each
    upsampling), so labels are drawn from the full-resolution mask, not only from the latent (the
    label-conditioned decoder of brainSPADE, Fernandez et al. 2022, with additive injection instead
    of SPADE). Those convs start at zero: a decoder grown from a mask-free one is the same function.
    """

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        ch, g = tuple(reversed(cfg.channels)), cfg.norm_groups
        self.factor = 2 ** (len(ch) - 1)
        self.conv_in = Conv3d(cfg.latent_channels, ch[0], 3, padding=1)
        layers: list[nn.Module] = [AEResBlock(ch[0], ch[0], g)]
        width = ch[0]
        for i, c in enumerate(ch):
            for _ in range(cfg.num_res_blocks):
                layers.append(AEResBlock(width, c, g))
                width = c
            if i < len(ch) - 1:
                layers.append(Upsample(width, ch[i + 1]))
                width = ch[i + 1]
        self.body = nn.Sequential(*layers)
        self.norm_out = GroupNormSiLU(g, width)
        self.conv_out = Conv3d(width, cfg.image_channels, 3, padding=1)
        self.mask_in: nn.ModuleList | None = None
        if cfg.mask_channels:
            self.mask_in = nn.ModuleList(Conv3d(cfg.mask_channels, c, 3, padding=1) for c in ch)
            for conv in self.mask_in:
                nn.init.zeros_(conv.weight)
                nn.init.zeros_(conv.bias)

    def _inject(self, h: torch.Tensor, mask: torch.Tensor, level: int) -> torch.Tensor:
        pool = self.factor >> level
        m = F.avg_pool3d(mask, pool) if pool > 1 else mask
        return h + self.mask_in[level](m.to(h.dtype)).to(h.dtype)

    def forward(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.conv_in(z)
        if self.mask_in is None:
            return self.conv_out(self.norm_out(self.body(h)))
        level = 0
        h = self._inject(h, mask, level)
        for layer in self.body:
            h = layer(h)
            if isinstance(layer, Upsample):
                level += 1
                h = self._inject(h, mask, level)
        return self.conv_out(self.norm_out(h))


class Autoencoder3D(nn.Module):
    """The KL autoencoder (see the module docstring). ``factor``: downsampling per axis."""

    def __init__(self, cfg: AutoencoderConfig):
        super().__init__()
        if not cfg.channels or any(c % cfg.norm_groups for c in cfg.channels):
            raise ValueError(f"every width in channels {cfg.channels} must be divisible by norm_groups "
                             f"{cfg.norm_groups}")
        self.cfg = cfg
        self.factor = 2 ** (len(cfg.channels) - 1)
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    def _check(self, x: torch.Tensor, what: str, channels: int) -> None:
        if x.ndim != 5 or x.shape[1] != channels:
            raise ValueError(f"{what} must be (N, {channels}, D, H, W), got shape {tuple(x.shape)}")

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` (N, C_img, D, H, W) -> ``(mean, logvar)``, each (N, C_lat, D/f, H/f, W/f),
        in x's dtype (float32 under autocast too)."""
        self._check(x, "x", self.cfg.image_channels)
        if any(int(s) % self.factor for s in x.shape[2:]):
            raise ValueError(f"spatial size {tuple(x.shape[2:])} must be divisible by {self.factor}")
        moments = self.encoder(x).to(x.dtype)
        mean, logvar = moments.chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    @property
    def needs_mask(self) -> bool:
        """True when :meth:`decode` takes the one-hot mask (``cfg.mask_channels`` > 0)."""
        return bool(self.cfg.mask_channels)

    def decode(self, z: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """``z`` (N, C_lat, d, h, w) -> (N, C_img, f*d, f*h, f*w) in z's dtype. ``mask``: the one-hot
        mask (N, K, f*d, f*h, f*w), required when the decoder reads it, else ignored."""
        self._check(z, "z", self.cfg.latent_channels)
        if not self.needs_mask:
            return self.decoder(z).to(z.dtype)
        if mask is None:
            raise ValueError("this autoencoder's decoder reads the mask: pass mask=")
        self._check(mask, "mask", self.cfg.mask_channels)
        want = tuple(self.factor * int(s) for s in z.shape[2:])
        if tuple(mask.shape[2:]) != want or mask.shape[0] != z.shape[0]:
            raise ValueError(f"mask must be ({z.shape[0]}, {self.cfg.mask_channels}, {', '.join(map(str, want))}) "
                             f"for these latents, got shape {tuple(mask.shape)}")
        return self.decoder(z, mask.to(z.device)).to(z.dtype)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None,
                sample: bool = True, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct ``x``: returns ``(recon (N, C_img, D, H, W), mean, logvar)``. With
        ``sample`` the latent is ``mean + exp(logvar / 2) * eps`` (``eps`` from ``generator``),
        else the posterior mean. ``mask``: as for :meth:`decode`."""
        mean, logvar = self.encode(x)
        z = mean
        if sample:
            eps = noise_rule.randn(mean.shape, generator, mean.device, mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * eps
        return self.decode(z, mask), mean, logvar


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, exp(logvar)) || N(0, 1)) averaged over all elements (a scalar, float32)."""
    mean, logvar = mean.float(), logvar.float()
    return 0.5 * (mean.pow(2) + logvar.exp() - 1.0 - logvar).mean()


def pool_cond(cond: torch.Tensor, factor: int) -> torch.Tensor:
    """One-hot mask ``cond`` (K, D, H, W) or (N, K, D, H, W) -> the latent grid, (K, D/f, H/f, W/f)
    or (N, K, D/f, H/f, W/f) float32: the fraction of each latent voxel's f^3 block that carries
    each label (average pooling, so partial volumes are kept and a tumour smaller than one latent
    voxel survives). Latent training and latent sampling both call this one function."""
    if cond.ndim not in (4, 5):
        raise ValueError(f"cond must be (K, D, H, W) or (N, K, D, H, W), got shape {tuple(cond.shape)}")
    if cond.ndim == 4:
        return F.avg_pool3d(cond[None].float(), factor)[0]
    return F.avg_pool3d(cond.float(), factor)


def latent_cond(cond: torch.Tensor, factor: int, cond_factor: int = 1) -> torch.Tensor:
    """One-hot mask ``cond`` ``(N, K, D, H, W)`` (or without N) -> the denoiser's condition on the
    latent grid ``(N, K * c**3, D/f, H/f, W/f)``, ``c = cond_factor``: average pooling by ``f / c``
    then space-to-depth by ``c`` (channel ``k * c**3 + (i * c + j) * c + l`` holds label ``k``'s
    fraction in sub-block ``(i, j, l)`` of each latent voxel). ``c = 1`` is :func:`pool_cond`;
    ``c = f`` passes the full-resolution mask, losslessly. Training and sampling both call this."""
    if cond_factor < 1 or factor % cond_factor:
        raise ValueError(f"cond_factor {cond_factor} must divide the autoencoder's factor {factor}")
    if cond_factor == 1:
        return pool_cond(cond, factor)
    single = cond.ndim == 4
    x = pool_cond(cond[None] if single else cond, factor // cond_factor)
    n, k, d, h, w = x.shape
    c = cond_factor
    x = x.reshape(n, k, d // c, c, h // c, c, w // c, c).permute(0, 1, 3, 5, 7, 2, 4, 6)
    x = x.reshape(n, k * c**3, d // c, h // c, w // c)
    return x[0] if single else x


def channel_stats(z: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of latents ``z`` (N, C, d, h, w) over cases and voxels, float64
    sums, each std floored at 1e-6: the ``latent_shift``/``latent_scale`` a latent run records."""
    if z.ndim != 5:
        raise ValueError(f"latents must be (N, C, d, h, w), got shape {tuple(z.shape)}")
    zz = z.double().transpose(0, 1).reshape(z.shape[1], -1)
    return tuple(float(v) for v in zz.mean(1)), tuple(max(float(v), 1e-6) for v in zz.std(1))


def standardize_latents(z: torch.Tensor, shift: Sequence[float] | None, scale: Sequence[float] | None,
                        inverse: bool = False) -> torch.Tensor:
    """``(z - shift) / scale`` per channel of ``z`` (C, ...) or (N, C, ...); ``inverse``: ``z * scale
    + shift``. ``shift``/``scale`` None: ``z`` unchanged (runs that use the global scale factor only)."""
    if shift is None or scale is None:
        return z
    c_dim = 0 if z.ndim == 4 else 1
    view = [1] * z.ndim
    view[c_dim] = -1
    if z.shape[c_dim] != len(shift) or len(shift) != len(scale):
        raise ValueError(f"latent statistics for {len(shift)} channel(s), latents have {z.shape[c_dim]}")
    sh = torch.tensor(shift, dtype=z.dtype, device=z.device).view(view)
    sc = torch.tensor(scale, dtype=z.dtype, device=z.device).view(view)
    return z * sc + sh if inverse else (z - sh) / sc


def build_autoencoder(cfg: AutoencoderConfig) -> Autoencoder3D:
    return Autoencoder3D(cfg)
