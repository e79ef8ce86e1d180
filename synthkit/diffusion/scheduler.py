"""What every scheduler shares: the step's input and output, the timestep grid, the base class.

A scheduler is tensor maths only (no network, no loop): given the denoised prediction at step
``t`` and the current sample ``x_t`` it returns ``x_{t'}`` at the next, less noisy step of its
grid (Ho et al. 2020; Song et al. 2021; Lu et al. 2022). :func:`synthkit.diffusion.sample` is the
one loop that calls the network and then ``step()``. A new sampler is one subclass registered in
:data:`synthkit.diffusion.registry.SAMPLERS`.

``t`` is a code index ``0..T-1`` (the papers' step ``t + 1``); the step after the last one of a
grid lands on clean data (``alpha_bar = 1``).
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import torch

from synthkit.diffusion._checks import Generators
from synthkit.diffusion.gaussian import GaussianDiffusion


class Denoised(NamedTuple):
    """The network's prediction at one step, after the x0 post-processing (clamp, background
    hold): ``eps`` and ``x0``, both (N, C, D, H, W) float32 and consistent with ``x_t``."""

    eps: torch.Tensor
    x0: torch.Tensor


class SchedulerOutput(NamedTuple):
    """``prev_sample``: x at the next step of the grid (N, C, D, H, W); ``pred_x0``: the x0
    the step used (N, C, D, H, W)."""

    prev_sample: torch.Tensor
    pred_x0: torch.Tensor


def spaced_timesteps(num_timesteps: int, steps: int, name: str = "sampler") -> list[int]:
    """The descending steps visited: ``round(linspace(T-1, 0, steps))`` (distinct integers).

    Both ends are included ("linspace" spacing with trailing zero), so the chain starts at the
    noisiest step T-1 and its last model call is at step 0.
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"{name} steps must be in 1..{num_timesteps}, got {steps}")
    if steps == 1:
        return [num_timesteps - 1]
    ts = torch.linspace(num_timesteps - 1, 0, steps, dtype=torch.float64).round().long()
    return [int(v) for v in ts]


class Scheduler:
    """Base class. Subclasses set ``name``, implement :meth:`step`, and may override
    :meth:`set_timesteps` (which must also reset any multistep state).

    One instance serves one sampling call: :func:`synthkit.diffusion.sample` builds a fresh one
    each time, so state never leaks between calls or threads.
    """

    name: ClassVar[str] = "sampler"

    def __init__(self, diffusion: GaussianDiffusion, *, eta: float = 0.0):
        self.diffusion = diffusion
        self.eta = float(eta)
        self.timesteps: list[int] = []
        self._index: dict[int, int] = {}

    def default_steps(self) -> int:
        """Steps used when ``set_timesteps(None)``: all T (overridden by few-step solvers)."""
        return self.diffusion.num_timesteps

    def set_timesteps(self, steps: int | None) -> None:
        """Choose the grid (:func:`spaced_timesteps`) for ``steps`` model calls (None: default)."""
        n = self.default_steps() if steps is None else int(steps)
        self._set_grid(spaced_timesteps(self.diffusion.num_timesteps, n, self.name))

    def _set_grid(self, timesteps: list[int]) -> None:
        self.timesteps = list(timesteps)
        self._index = {t: i for i, t in enumerate(self.timesteps)}

    def position(self, t: int) -> int:
        """Index of ``t`` in :attr:`timesteps` (ValueError when ``t`` is not on the grid)."""
        try:
            return self._index[int(t)]
        except KeyError:
            raise ValueError(f"step {t} is not on this {self.name} grid; call set_timesteps first") from None

    def alpha_bar_next(self, t: int) -> float:
        """``alpha_bar`` of the step after ``t`` on the grid; 1.0 (clean data) after the last."""
        i = self.position(t)
        if i + 1 < len(self.timesteps):
            return float(self.diffusion.alphas_cumprod[self.timesteps[i + 1]])
        return 1.0

    def step(
        self,
        model_output: Denoised,
        t: int,
        sample: torch.Tensor,
        generator: Generators | None = None,
    ) -> SchedulerOutput:
        """From ``sample`` = x_t (N, C, D, H, W) and the prediction at ``t`` to the next step."""
        raise NotImplementedError
