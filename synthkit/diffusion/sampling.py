"""``sample()``: one entry point for every sampler (all share one signature)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from synthkit.diffusion._checks import Generators
from synthkit.diffusion.ddim import ddim_sample
from synthkit.diffusion.ddpm import ddpm_sample
from synthkit.diffusion.gaussian import GaussianDiffusion, Model
from synthkit.networks.precision import Precision

SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"ddpm": ddpm_sample, "ddim": ddim_sample}


def sample(
    model: Model,
    diffusion: GaussianDiffusion,
    cond: torch.Tensor,
    *,
    sampler: Literal["ddpm", "ddim"] = "ddpm",
    steps: int | None = None,
    eta: float = 0.0,
    generator: Generators,
    image_channels: int,
    clip_x0: bool = True,
    background: torch.Tensor | None = None,
    progress: Callable[[int, int], None] | None = None,
    autocast: Precision | None = None,
) -> torch.Tensor:
    """Generate images for the given masks (Med-DDPM Algorithm 2, or DDIM).

    Args:
        model: denoiser ``(N, C_img + K, D, H, W), (N,) -> (N, C_img, D, H, W)``; it is put in
            eval mode for the call and restored afterwards.
        diffusion: the schedule the model was trained with.
        cond: (N, K, D, H, W) one-hot masks, background dropped, on the sampling device.
        sampler: ``"ddpm"`` (all T steps, sigma_t^2 = beta_t as in the paper) or ``"ddim"``.
        steps: DDIM steps (default T); DDPM accepts only None or T.
        eta: DDIM stochasticity (0 = deterministic given x_T); unused by DDPM.
        generator: the only source of randomness (on the same device as ``cond``): one
            ``torch.Generator`` for the whole batch, or a sequence of N, one per volume, so that
            volume ``i``'s x_T and noise come only from generator ``i`` (the network is still
            called once per step for the whole batch). The same seed(s) give bit-identical
            output on the same machine, thread count and batch size; with per-volume generators
            a volume matches its batch-1 run to ~1e-5 (kernels may round differently at other
            batch sizes).
        image_channels: C_img of the output.
        clip_x0: clamp each predicted x0 to [-1, 1].
        background: optional (N, 1, D, H, W) bool/float, True (> 0.5) outside the head; the
            predicted x0 is held at -1 there at every step.
        progress: called as ``progress(steps_done, total)`` after every step.
        autocast: precision of the network calls: None/"fp32", "bf16", "fp16" (CUDA) or "auto";
            unsupported choices fall back to fp32.
    Returns:
        (N, C_img, D, H, W) float32 in [-1, 1].
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")
    was_training = getattr(model, "training", False)
    if isinstance(model, torch.nn.Module):
        model.eval()
    try:
        return SAMPLERS[sampler](
            model,
            diffusion,
            cond,
            steps=steps,
            eta=eta,
            generator=generator,
            image_channels=image_channels,
            clip_x0=clip_x0,
            background=background,
            progress=progress,
            autocast=autocast,
        )
    finally:
        if isinstance(model, torch.nn.Module) and was_training:
            model.train()
