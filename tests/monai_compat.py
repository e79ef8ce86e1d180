"""Load weights of MONAI's ``DiffusionModelUNet`` into :class:`Denoiser3D` (tests and
benchmarks/bench_denoiser.py: our U-Net is the same function as MONAI's).

The two networks are the same function when MONAI is configured as
``DiffusionModelUNet(spatial_dims=3, in_channels=C_img+C_mask, out_channels=C_img,
channels=[base*m for m in channel_mults], attention_levels=..., num_res_blocks=n,
num_head_channels=[c // num_heads for c in channels], norm_num_groups=...,
resblock_updown=False)``. This module only renames state-dict keys (MONAI is not imported);
the separate q/k/v projections are stacked into our single ``qkv`` projection.
"""

from __future__ import annotations

import re

import torch

from synthkit.config import ModelConfig

_RULES: list[tuple[str, str]] = [
    (r"^conv_in\.conv\.", "conv_in."),
    (r"^time_embed\.", "time_embed."),
    (r"^down_blocks\.(\d+)\.resnets\.", r"down.\1.res."),
    (r"^down_blocks\.(\d+)\.attentions\.", r"down.\1.attn."),
    (r"^down_blocks\.(\d+)\.downsampler\.op\.conv\.", r"down.\1.resample.conv."),
    (r"^middle_block\.resnet_1\.", "mid.res1."),
    (r"^middle_block\.resnet_2\.", "mid.res2."),
    (r"^middle_block\.attention\.", "mid.attn."),
    (r"^up_blocks\.(\d+)\.resnets\.", r"up.\1.res."),
    (r"^up_blocks\.(\d+)\.attentions\.", r"up.\1.attn."),
    (r"^up_blocks\.(\d+)\.upsampler\.postconv\.conv\.", r"up.\1.resample.conv."),
    (r"^out\.0\.", "out_norm."),
    (r"^out\.2\.conv\.", "out_conv."),
    # inside blocks
    (r"\.conv([12])\.conv\.", r".conv\1."),
    (r"\.time_emb_proj\.", ".emb_proj."),
    (r"\.skip_connection\.conv\.", ".skip."),
    (r"\.attn\.out_proj\.", ".proj."),
]


def convert_monai_state_dict(monai_state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a ``DiffusionModelUNet.state_dict()`` onto :class:`Denoiser3D` key names.

    Raises KeyError for a key this mapping does not know (e.g. cross-attention weights).
    """
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in monai_state.items():
        new = key
        for pat, rep in _RULES:
            new = re.sub(pat, rep, new)
        if new == key and not key.startswith("time_embed."):
            raise KeyError(f"no mapping for MONAI key {key!r}")
        m = re.search(r"\.attn\.to_([qkv])\.(weight|bias)$", new)
        if m:  # stack q, k, v (in that order) into one projection
            qkv.setdefault(f"{new[: m.start()]}.qkv.{m.group(2)}", {})[m.group(1)] = value
        else:
            out[new] = value
    for key, parts in qkv.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]], dim=0)
    return out


def monai_reference(cfg: ModelConfig) -> torch.nn.Module:
    """MONAI's ``DiffusionModelUNet`` configured like ``cfg``: the same function and parameter
    count as :class:`~synthkit.networks.unet.Denoiser3D` (needs ``monai`` and ``einops``)."""
    from monai.networks.nets import DiffusionModelUNet

    chans = [cfg.base_channels * m for m in cfg.channel_mults]
    return DiffusionModelUNet(
        spatial_dims=3,
        in_channels=cfg.in_channels,
        out_channels=cfg.image_channels,
        channels=chans,
        attention_levels=cfg.attention_levels,
        num_res_blocks=cfg.num_res_blocks,
        num_head_channels=[c // cfg.num_heads for c in chans],
        norm_num_groups=cfg.norm_groups,
    )
