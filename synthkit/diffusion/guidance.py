"""Classifier-free guidance on the mask (Ho & Salimans 2022), around any mask-concat denoiser.

A model trained with ``cond_drop > 0`` has seen its condition replaced by zeros on a fraction of
its steps, so the same network predicts both the conditional output ``c = model(cat(x_t, mask))``
and the unconditional one ``u = model(cat(x_t, 0))``. Sampling with guidance weight ``w`` uses::

    out = u + w * (c - u)

``w = 1`` is the plain conditional model (no extra cost: :func:`guided` returns the model
itself), ``w > 1`` pushes each step further towards what the mask asks for. The two halves are
evaluated in one batched call of ``2N`` volumes; the output is linear in the network's output, so
it applies alike to eps and v prediction.
"""

from __future__ import annotations

import torch
from torch import nn


class GuidedDenoiser(nn.Module):
    """``model`` with guidance weight ``scale``; its input is ``cat(x_t, cond)`` as the model's,
    the first ``image_channels`` channels being ``x_t``."""

    def __init__(self, model: nn.Module, image_channels: int, scale: float):
        super().__init__()
        self.model = model
        self.image_channels = int(image_channels)
        self.scale = float(scale)

    def forward(self, inp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        uncond = inp.clone()
        uncond[:, self.image_channels :] = 0
        out = self.model(torch.cat([inp, uncond]), torch.cat([t, t]))
        c, u = out.chunk(2)
        return u + self.scale * (c - u)


def guided(model: nn.Module, image_channels: int, scale: float) -> nn.Module:
    """``model`` itself for ``scale == 1``, else a :class:`GuidedDenoiser`."""
    if scale < 0:
        raise ValueError(f"guidance must be >= 0, got {scale}")
    return model if scale == 1.0 else GuidedDenoiser(model, image_channels, scale)
