"""One denoiser evaluation during sampling: model call, (eps, x0), clamp, background hold.

This is where the x0 post-processing lives, before any scheduler sees the prediction: every
scheduler then steps with the same clamped / held x0 (and the eps recomputed from it), so they
differ only in how they move from ``x_t`` to the next step.
"""

from __future__ import annotations

import torch

from synthkit.diffusion.gaussian import GaussianDiffusion, Model
from synthkit.diffusion.scheduler import Denoised
from synthkit.runtime.precision import Precision, autocast_context

BACKGROUND_VALUE = -1.0


def denoise(
    model: Model,
    diffusion: GaussianDiffusion,
    x_t: torch.Tensor,
    t: int,
    cond: torch.Tensor,
    *,
    clip_x0: bool = True,
    background: torch.Tensor | None = None,
    autocast: Precision | None = None,
) -> Denoised:
    """Predict (eps, x0) at integer step ``t`` for the whole batch with ONE network call.

    Args:
        x_t: (N, C_img, D, H, W) float32.
        cond: (N, K, D, H, W) one-hot mask (joined to ``x_t`` by ``diffusion.model_input``).
        clip_x0: clamp the predicted x0 to [-1, 1] (Ho et al. 2020's sampler does).
        background: (N, 1, D, H, W) bool, True outside the head: x0 is held at -1 there.
        autocast: precision of the model call (``None``/"fp32", "bf16", "auto"); maths is fp32.
    Returns:
        Denoised(eps, x0), both (N, C_img, D, H, W) float32, from the network output read as
        ``diffusion.cfg.prediction`` ("epsilon" or "v"). When x0 was changed (clip,
        background), eps is recomputed from it so that the pair stays consistent with ``x_t``.
    """
    tt = torch.full((x_t.shape[0],), t, dtype=torch.long, device=x_t.device)
    with autocast_context(x_t.device, autocast):
        out = model(diffusion.model_input(x_t, cond), tt)
    eps, x0 = diffusion.model_output_to_eps_x0(out.float(), x_t, tt)
    changed = False
    if clip_x0:
        x0 = x0.clamp(-1.0, 1.0)
        changed = True
    if background is not None:
        x0 = x0.masked_fill(background, BACKGROUND_VALUE)
        changed = True
    if changed:
        eps = diffusion.eps_from_x0(x_t, tt, x0)
    return Denoised(eps, x0)
