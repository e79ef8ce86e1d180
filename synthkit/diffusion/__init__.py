"""Gaussian diffusion for Med-DDPM: schedules, the training loss and the samplers.

The network knows nothing about noise; :class:`GaussianDiffusion` is tensor maths only; each
sampler is a plain loop in its own file; :func:`sample` dispatches between them.
"""

from synthkit.diffusion.ddim import ddim_sample, ddim_timesteps
from synthkit.diffusion.ddpm import ddpm_sample
from synthkit.diffusion.gaussian import GaussianDiffusion
from synthkit.diffusion.sampling import SAMPLERS, sample
from synthkit.diffusion.schedule import cosine_alpha_bar, cosine_betas, linear_betas, make_betas

__all__ = [
    "SAMPLERS",
    "GaussianDiffusion",
    "cosine_alpha_bar",
    "cosine_betas",
    "ddim_sample",
    "ddim_timesteps",
    "ddpm_sample",
    "linear_betas",
    "make_betas",
    "sample",
]
