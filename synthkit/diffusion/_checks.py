"""Argument checks shared by the samplers (one signature, one set of errors)."""

from __future__ import annotations

import torch


def check_sampling_args(
    cond: torch.Tensor,
    generator: torch.Generator,
    image_channels: int,
    background: torch.Tensor | None,
) -> torch.Tensor | None:
    """Validate the sampler inputs; returns ``background`` as a (N, 1, D, H, W) bool tensor."""
    if cond.ndim != 5:
        raise ValueError(f"cond must be (N, K, D, H, W), got shape {tuple(cond.shape)}")
    if image_channels < 1:
        raise ValueError(f"image_channels must be >= 1, got {image_channels}")
    if not isinstance(generator, torch.Generator):
        raise TypeError("generator must be a torch.Generator (sampling randomness is explicit)")
    if torch.device(generator.device).type != cond.device.type:
        raise ValueError(
            f"generator is on {generator.device} but cond is on {cond.device}; "
            "create the generator on the sampling device"
        )
    if background is None:
        return None
    if background.ndim == 4:
        background = background[:, None]
    n, _, *spatial = cond.shape
    if background.shape != (n, 1, *spatial):
        raise ValueError(
            f"background must be (N, 1, D, H, W) = {(n, 1, *spatial)}, got {tuple(background.shape)}"
        )
    if background.dtype != torch.bool:
        background = background > 0.5
    return background.to(cond.device)
