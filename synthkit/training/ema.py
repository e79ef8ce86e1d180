"""Exponential moving average (EMA) of model weights.

The EMA copy is what gets sampled from (``model.safetensors`` in a run folder holds EMA
weights). The update follows the usual form (Polyak averaging, as in DDPM/Med-DDPM code)::

    ema = d * ema + (1 - d) * param,   d = min(decay, (1 + n) / (10 + n))

where ``n`` is the number of updates so far. The warm-up term keeps the average from being
dominated by the random initialisation in short runs (e.g. tests and previews early in
training); for long runs ``d`` is simply ``decay``.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Holds an EMA copy of ``model`` (same architecture, no gradients, eval mode).

    Parameters are averaged in float32 whatever the training precision; buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
        self.decay = float(decay)
        self.warmup = warmup
        self.num_updates = 0
        self.model = copy.deepcopy(model).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    def current_decay(self) -> float:
        if not self.warmup:
            return self.decay
        n = self.num_updates
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the live ``model`` weights into the average (call after each optimizer step)."""
        d = self.current_decay()
        ema_params = dict(self.model.named_parameters())
        for name, p in model.named_parameters():
            e = ema_params[name]
            if not p.requires_grad:  # frozen: the average of a constant is that constant, bit for bit
                e.copy_(p.detach())
                continue
            e.mul_(d).add_(p.detach().to(e.dtype), alpha=1.0 - d)
        ema_buffers = dict(self.model.named_buffers())
        for name, b in model.named_buffers():
            ema_buffers[name].copy_(b)
        self.num_updates += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], num_updates: int) -> None:
        self.model.load_state_dict(state, strict=True)
        self.num_updates = int(num_updates)
