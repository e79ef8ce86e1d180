"""``sample()``: the one sampling loop, shared by every scheduler.

    x_T ~ N(0, I)                                  (per-volume generators allowed)
    for t in scheduler.timesteps:
        eps, x0 = denoise(model(cat(x_t, cond), t))  (prediction type, clamp, background hold)
        x_t = scheduler.step((eps, x0), t, x_t, generator).prev_sample
        progress(i, n)
    return clamp(x, -1, 1)                         (unless clamp_output=False: latents)
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from synthkit.diffusion._checks import Generators, start_chain
from synthkit.diffusion.gaussian import GaussianDiffusion, Model
from synthkit.diffusion.guidance import guided
from synthkit.diffusion.prediction import denoise
from synthkit.diffusion.registry import make_scheduler
from synthkit.runtime.precision import Precision


@torch.no_grad()
def sample(
    model: Model,
    diffusion: GaussianDiffusion,
    cond: torch.Tensor,
    *,
    sampler: str = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    generator: Generators,
    image_channels: int,
    clip_x0: bool = True,
    background: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
    autocast: Precision | None = None,
    clamp_output: bool = True,
    guidance: float = 1.0,
) -> torch.Tensor:
    """Generate images for the given masks (Med-DDPM Algorithm 2, DDIM or DPM-Solver++).

    Args:
        model: denoiser ``(N, C_img + K, D, H, W), (N,) -> (N, C_img, D, H, W)`` predicting eps
            or v (``diffusion.cfg.prediction``); it is put in eval mode for the call and
            restored afterwards. Called once per step for the whole batch.
        diffusion: the schedule the model was trained with.
        cond: (N, K, D, H, W) one-hot masks, background dropped, on the sampling device.
        sampler: a key of :data:`~synthkit.diffusion.registry.SAMPLERS`: ``"ddpm"`` (all T
            steps, sigma_t^2 = beta_t as in the paper), ``"ddim"`` or ``"dpmpp"``
            (DPM-Solver++(2M), Lu et al. 2022: 10-25 steps).
        steps: model calls; DDIM default T, DPM-Solver++ default 25, DDPM only None or T.
        eta: DDIM stochasticity (0 = deterministic given x_T); unused by DDPM; must be 0 for
            DPM-Solver++.
        generator: the only source of randomness (on the same device as ``cond``): one
            ``torch.Generator`` for the whole batch, or a sequence of N, one per volume, so that
            volume ``i``'s x_T and noise come only from generator ``i`` (the network is still
            called once per step for the whole batch). The same seed(s) give bit-identical
            output on the same machine, thread count and batch size; with per-volume generators
            a volume matches its batch-1 run within 1e-4 (tested; bit-identical on an AVX-512
            CPU in fp32), not always bit for bit, since kernels may round differently at other
            batch sizes (GPU, bf16, other CPUs).
        image_channels: C_img of the output.
        clip_x0: clamp each predicted x0 to [-1, 1].
        background: optional (N, 1, D, H, W) bool/float, True (> 0.5) outside the head; the
            predicted x0 is held at -1 there at every step.
        progress: called as ``progress(steps_done, total)`` after every step.
        autocast: precision of the network calls: None/"fp32", "bf16", "fp16" (CUDA) or "auto";
            unsupported choices fall back to fp32.
        clamp_output: clamp the final sample to [-1, 1]. Latent diffusion turns it off (and
            ``clip_x0`` too): scaled latents have unit variance, they are not bounded by [-1, 1].
        guidance: classifier-free guidance weight on the mask (:mod:`synthkit.diffusion.guidance`;
            1 = the conditional model alone, one network call per step; otherwise two halves
            batched in one call). Meaningful for models trained with ``cond_drop > 0``.
    Returns:
        (N, C_img, D, H, W) float32, in [-1, 1] with ``clamp_output``.
    """
    scheduler = make_scheduler(sampler, diffusion, steps=steps, eta=eta)  # fresh state per call
    if guidance != 1.0:
        model = guided(model, image_channels, guidance)
    x, bg = start_chain(cond, generator, image_channels, background)
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        total = len(scheduler.timesteps)
        for i, t in enumerate(scheduler.timesteps):
            pred = denoise(model, diffusion, x, t, cond, clip_x0=clip_x0, background=bg, autocast=autocast)
            x = scheduler.step(pred, t, x, generator).prev_sample
            if progress is not None:
                progress(i + 1, total)
    finally:
        if isinstance(model, torch.nn.Module) and was_training:
            model.train()
    return x.clamp(-1.0, 1.0) if clamp_output else x
