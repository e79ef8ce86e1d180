"""The samplers by name: one dict (the command line offers its keys as ``--sampler`` choices).

Adding a sampler = one :class:`~synthkit.diffusion.scheduler.Scheduler` subclass in its own file
plus one entry here; the sampling loop, checks and batching are shared.
"""

from __future__ import annotations

from enum import Enum

from synthkit.diffusion.ddim import DDIMScheduler
from synthkit.diffusion.ddpm import DDPMScheduler
from synthkit.diffusion.dpm_solver import DPMSolverPPScheduler
from synthkit.diffusion.gaussian import GaussianDiffusion
from synthkit.diffusion.scheduler import Scheduler

SAMPLERS: dict[str, type[Scheduler]] = {
    "ddpm": DDPMScheduler,  # Ho et al. 2020, all T steps (the paper's sampler)
    "ddim": DDIMScheduler,  # Song et al. 2021, any steps, eta
    "dpmpp": DPMSolverPPScheduler,  # Lu et al. 2022, DPM-Solver++(2M), 10-25 steps
}


def make_scheduler(sampler: str, diffusion: GaussianDiffusion, *, steps: int | None = None,
                   eta: float = 0.0) -> Scheduler:
    """A fresh scheduler for one sampling call, with its timesteps set (ValueError for a bad
    name, steps or eta)."""
    key = sampler.value if isinstance(sampler, Enum) else sampler
    if key not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    scheduler = SAMPLERS[key](diffusion, eta=eta)
    scheduler.set_timesteps(steps)
    return scheduler
