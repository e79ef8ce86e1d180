"""Gaussian diffusion for Med-DDPM: schedules, the training loss, schedulers and one sampling loop.

The network knows nothing about noise; :class:`GaussianDiffusion` and the schedulers
(:class:`DDPMScheduler`, :class:`DDIMScheduler`, :class:`DPMSolverPPScheduler`, each with a
``step()``) are tensor maths only; :func:`sample` is the one loop that calls the network and a
scheduler picked by name from :data:`SAMPLERS`.
"""

from synthkit.diffusion.ddim import DDIMScheduler, ddim_timesteps
from synthkit.diffusion.ddpm import DDPMScheduler
from synthkit.diffusion.dpm_solver import DPMSolverPPScheduler
from synthkit.diffusion.gaussian import GaussianDiffusion
from synthkit.diffusion.registry import SAMPLERS, make_scheduler
from synthkit.diffusion.sampling import sample
from synthkit.diffusion.schedule import cosine_alpha_bar, cosine_betas, linear_betas, make_betas
from synthkit.diffusion.scheduler import Denoised, Scheduler, SchedulerOutput, spaced_timesteps

__all__ = [
    "SAMPLERS",
    "DDIMScheduler",
    "DDPMScheduler",
    "DPMSolverPPScheduler",
    "Denoised",
    "GaussianDiffusion",
    "Scheduler",
    "SchedulerOutput",
    "cosine_alpha_bar",
    "cosine_betas",
    "ddim_timesteps",
    "linear_betas",
    "make_betas",
    "make_scheduler",
    "sample",
    "spaced_timesteps",
]
