"""Argument checks and the start of the chain, shared by the samplers (one signature, one set of errors)."""

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


def start_chain(
    cond: torch.Tensor,
    generator: torch.Generator,
    image_channels: int,
    background: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check the sampler inputs (:func:`check_sampling_args`) and draw x_T.

    Returns:
        x_T: (N, image_channels, D, H, W) float32 standard normal from ``generator``, on
        ``cond``'s device; background: (N, 1, D, H, W) bool or None.
    """
    bg = check_sampling_args(cond, generator, image_channels, background)
    n, _, *spatial = cond.shape
    x = torch.randn((n, image_channels, *spatial), generator=generator, device=cond.device,
                    dtype=torch.float32)
    return x, bg


def noise_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fresh float32 standard normal noise of ``x``'s shape and device, drawn from ``generator``."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float32)
