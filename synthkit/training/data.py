"""Deterministic, resumable, rank-aware batch order.

Sample ``p`` of the run's global sample stream is ``perm(epoch)[p % N]`` with
``epoch = p // N`` and ``perm(e)`` a permutation drawn from ``torch.Generator`` seeded by
``(seed, e)``. Optimizer step ``s``, micro-batch ``a`` (gradient accumulation) on rank ``r``
of ``W`` takes positions ``((s * A + a) * W + r) * B + b`` for ``b < B``. The order is thus a
pure function of (seed, step): a resumed run continues with exactly the batches it would
have seen, and ranks never share a sample within a step (a DistributedSampler-like split).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

_EPOCH_SALT = 0x5EED_0000


class StepBatchSampler(torch.utils.data.Sampler[list[int]]):
    """Yields index lists of size ``batch_size`` for micro-batches from ``start_step`` on."""

    def __init__(self, num_items: int, *, batch_size: int, grad_accum: int, seed: int,
                 start_step: int, total_steps: int, rank: int = 0, world_size: int = 1):
        if num_items < 1:
            raise ValueError("cannot train on an empty dataset")
        self.n = num_items
        self.batch_size = batch_size
        self.grad_accum = grad_accum
        self.seed = seed
        self.start_step = start_step
        self.total_steps = total_steps
        self.rank = rank
        self.world_size = world_size
        self._perms: dict[int, torch.Tensor] = {}

    def _perm(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            g = torch.Generator().manual_seed((self.seed * 1_000_003 + epoch + _EPOCH_SALT) % 2**63)
            self._perms = {epoch: torch.randperm(self.n, generator=g)}  # keep only the current one
        return self._perms[epoch]

    def indices(self, step: int, micro: int) -> list[int]:
        base = ((step * self.grad_accum + micro) * self.world_size + self.rank) * self.batch_size
        out = []
        for p in range(base, base + self.batch_size):
            out.append(int(self._perm(p // self.n)[p % self.n]))
        return out

    def __iter__(self) -> Iterator[list[int]]:
        for step in range(self.start_step, self.total_steps):
            for micro in range(self.grad_accum):
                yield self.indices(step, micro)

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * self.grad_accum
