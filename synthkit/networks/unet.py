"""The Med-DDPM denoiser: a 3D U-Net conditioned on the timestep (Dorjsembe et al. 2024, Fig. 1).

Layout (the openai/guided-diffusion U-Net in 3D, the same as MONAI's ``DiffusionModelUNet``
with ``resblock_updown=False``)::

    conv_in (C_in -> base)
    level i = 0..L-1 : num_res_blocks x [ResBlock (+ attention if attention_levels[i])]
                       then a stride-2 conv (not after the last level)
    middle           : ResBlock -> attention -> ResBlock
    level i = L-1..0 : (num_res_blocks + 1) x [concat skip -> ResBlock (+ attention)]
                       then nearest x2 upsample + conv (not after level 0)
    out              : GroupNorm -> SiLU -> zero-initialised conv (base -> C_img)

Every ResBlock adds a projection of the time embedding (sinusoidal features of ``t`` through
``Linear -> SiLU -> Linear`` of width 4 * base). The ``paper`` preset has 40,226,433 parameters
for 1 image channel and 2 mask classes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from synthkit.config import ModelConfig
from synthkit.networks.attention import SpatialSelfAttention
from synthkit.networks.conv import Conv3d
from synthkit.networks.embedding import TimestepMLP
from synthkit.networks.norm import GroupNormSiLU
from synthkit.networks.resample import Downsample, Upsample
from synthkit.networks.resblock import ResBlock


class _Level(nn.Module):
    """One U-Net level: ResBlocks, optional attention after each, optional resampling."""

    def __init__(self, res: list[ResBlock], attn: list[nn.Module], resample: nn.Module | None):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = nn.ModuleList(attn)
        self.resample = resample


class _Middle(nn.Module):
    def __init__(self, channels: int, embed_dim: int, cfg: ModelConfig):
        super().__init__()
        self.res1 = ResBlock(channels, channels, embed_dim, cfg.norm_groups, cfg.dropout)
        self.attn = SpatialSelfAttention(channels, cfg.num_heads, cfg.norm_groups)
        self.res2 = ResBlock(channels, channels, embed_dim, cfg.norm_groups, cfg.dropout)


class Denoiser3D(nn.Module):
    """Timestep-conditioned 3D U-Net predicting noise (or v) for mask-conditioned diffusion.

    ``in_channels = image channels + mask classes (background dropped)``: the caller (the
    diffusion, in exactly one place) concatenates the noisy image and the one-hot mask,
    ``torch.cat([x_t, mask], dim=1)``; the network only sees the concatenated tensor.

    forward(x: (N, C_img + C_mask, D, H, W), t: (N,) long) -> (N, C_img, D, H, W)

    D, H and W must each be divisible by ``2 ** (len(channel_mults) - 1)`` (ValueError
    otherwise). With ``cfg.gradient_checkpointing`` the activations of each ResBlock and
    attention block are recomputed in the backward pass (less memory, ~30% more compute).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        _validate(cfg)
        self.cfg = cfg
        base = cfg.base_channels
        chans = [base * m for m in cfg.channel_mults]
        embed_dim = 4 * base
        groups, drop = cfg.norm_groups, cfg.dropout
        n_levels = len(chans)

        self.conv_in = Conv3d(cfg.in_channels, base, 3, padding=1)
        self.time_embed = TimestepMLP(base, embed_dim)

        skip_chans = [base]
        self.down = nn.ModuleList()
        ch = base
        for i, out_ch in enumerate(chans):
            res, attn = [], []
            for _ in range(cfg.num_res_blocks):
                res.append(ResBlock(ch, out_ch, embed_dim, groups, drop))
                ch = out_ch
                if cfg.attention_levels[i]:
                    attn.append(SpatialSelfAttention(ch, cfg.num_heads, groups))
                skip_chans.append(ch)
            down = Downsample(ch) if i < n_levels - 1 else None
            if down is not None:
                skip_chans.append(ch)
            self.down.append(_Level(res, attn, down))

        self.mid = _Middle(ch, embed_dim, cfg)

        self.up = nn.ModuleList()
        for i in reversed(range(n_levels)):
            res, attn = [], []
            for _ in range(cfg.num_res_blocks + 1):
                res.append(ResBlock(ch + skip_chans.pop(), chans[i], embed_dim, groups, drop))
                ch = chans[i]
                if cfg.attention_levels[i]:
                    attn.append(SpatialSelfAttention(ch, cfg.num_heads, groups))
            self.up.append(_Level(res, attn, Upsample(ch) if i > 0 else None))

        self.out_norm = GroupNormSiLU(groups, base)
        self.out_conv = Conv3d(base, cfg.image_channels, 3, padding=1)
        nn.init.zeros_(self.out_conv.weight)
        nn.init.zeros_(self.out_conv.bias)

    # -- helpers -------------------------------------------------------------------------
    def _run(self, block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.cfg.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def _check_input(self, x: torch.Tensor, t: torch.Tensor) -> None:
        if x.ndim != 5:
            raise ValueError(f"expected input (N, C, D, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != self.cfg.in_channels:
            raise ValueError(
                f"expected {self.cfg.in_channels} input channels (image {self.cfg.image_channels}"
                f" + mask {self.cfg.cond_channels}), got {x.shape[1]}"
            )
        f = self.cfg.downsample_factor
        if any(s % f for s in x.shape[2:]):
            raise ValueError(
                f"spatial size {tuple(x.shape[2:])} is not divisible by {f} "
                f"(2**(levels-1) for {len(self.cfg.channel_mults)} levels); pad or crop the volume"
            )
        if t.shape != (x.shape[0],):
            raise ValueError(f"expected timesteps of shape ({x.shape[0]},), got {tuple(t.shape)}")

    # -- forward -------------------------------------------------------------------------
    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self._check_input(x, t)
        if t.shape[0] > 1 and bool((t == t[0]).all()):
            t = t[:1]  # shared timestep (sampling): one embedding, folded into conv biases
        emb = F.silu(self.time_embed(t))  # every ResBlock projects silu(emb)
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for j, res in enumerate(level.res):
                h = self._run(res, h, emb)
                if len(level.attn):
                    h = self._run(level.attn[j], h)
                skips.append(h)
            if level.resample is not None:
                h = level.resample(h)
                skips.append(h)
        h = self._run(self.mid.res1, h, emb)
        h = self._run(self.mid.attn, h)
        h = self._run(self.mid.res2, h, emb)
        for level in self.up:
            for j, res in enumerate(level.res):
                skip = skips.pop()
                h = self._run(res, torch.cat([h, skip.to(h.dtype)], dim=1), emb)
                if len(level.attn):
                    h = self._run(level.attn[j], h)
            if level.resample is not None:
                h = level.resample(h)
        return self.out_conv(self.out_norm(h)).to(x.dtype)


def _validate(cfg: ModelConfig) -> None:
    chans = [cfg.base_channels * m for m in cfg.channel_mults]
    if len(cfg.attention_levels) != len(chans):
        raise ValueError(
            f"attention_levels has {len(cfg.attention_levels)} entries for {len(chans)} levels"
        )
    if cfg.num_res_blocks < 1:
        raise ValueError("num_res_blocks must be >= 1")
    bad = [c for c in chans if c % cfg.norm_groups]
    if bad:
        raise ValueError(f"channel counts {bad} are not divisible by norm_groups={cfg.norm_groups}")
    att = [c for c, a in zip(chans, cfg.attention_levels, strict=True) if a] + [chans[-1]]
    if any(c % cfg.num_heads for c in att):
        raise ValueError(f"attention channels {att} are not divisible by num_heads={cfg.num_heads}")


def build_denoiser(
    preset: str | ModelConfig, image_channels: int = 1, mask_classes: int = 2
) -> Denoiser3D:
    """Build the denoiser from a preset name (``paper``, ``small``, ``tiny``) or a ModelConfig.

    ``in_channels = image_channels + mask_classes`` (one-hot mask, background dropped);
    output has ``image_channels``. With a ModelConfig the channel arguments are ignored
    (the config carries them).
    """
    from synthkit.config import model_config

    cfg = (
        preset
        if isinstance(preset, ModelConfig)
        else model_config(preset, image_channels=image_channels, mask_classes=mask_classes)
    )
    return Denoiser3D(cfg)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
