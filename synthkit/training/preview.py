"""Preview PNGs during training: a quick DDIM sample from the EMA weights on one training mask.

Cheap by design (a handful of DDIM steps on a single volume, ``torch.no_grad``), so it never
stalls training for long. Written by rank 0 only, atomically, as ``previews/step_XXXXXXXX.png``
with the real image and the sample side by side, mask outlined.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from synthkit import noise as noise_rule
from synthkit.masks.labels import is_head_name


def has_head_label(labels: dict[str, int], brain_label: int | None) -> bool:
    """Whether one label covers the whole head/brain, so 'no label' means 'outside the head'."""
    if brain_label is not None:
        return True
    return any(is_head_name(name) and int(v) != 0 for name, v in labels.items())


def background_from_cond(cond: torch.Tensor) -> torch.Tensor:
    """``(N, K, D, H, W)`` one-hot -> ``(N, 1, D, H, W)`` bool, True where every channel is 0."""
    return cond.sum(dim=1, keepdim=True) == 0


@torch.no_grad()
def write_preview(model: torch.nn.Module, diffusion: Any, item: dict[str, torch.Tensor], path: str | Path, *,
                  step: int, device: str, use_background: bool, sampling_steps: int = 8,
                  seed: int = 0) -> Path:
    """Sample one volume for ``item["cond"]`` ``(K, D, H, W)`` and write a montage PNG to ``path``."""
    from synthkit.diffusion import sample
    from synthkit.viz import montage

    cond = item["cond"][None].to(device)
    image = item["image"]
    channels = int(image.shape[0])
    g = noise_rule.cpu_generator(seed)
    steps = max(1, min(sampling_steps, int(diffusion.num_timesteps) if hasattr(diffusion, "num_timesteps") else sampling_steps))
    was_training = model.training
    model.eval()
    try:
        out = sample(model, diffusion, cond, sampler="ddim", steps=steps, eta=0.0, generator=g,
                     image_channels=channels, background=background_from_cond(cond) if use_background else None)
    finally:
        model.train(was_training)
    synth = out[0].float().cpu().numpy()
    real = image.float().cpu().numpy()
    labels = item["labels"].cpu().numpy()
    shown = min(channels, 4)
    vols, masks, titles = [], [], []
    for c in range(shown):
        vols += [real[c], synth[c]]
        masks += [labels, labels]
        titles += [f"real ch{c}", f"sample ch{c} (step {step})"]
    return montage(vols, masks, titles, Path(path), window=(-1.0, 1.0))
