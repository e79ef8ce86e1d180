"""Preview PNGs of autoencoder training: one whole preprocessed volume next to its reconstruction
(posterior mean, EMA weights), with the PSNR inside the head in the title."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch


@torch.no_grad()
def reconstruct(model: torch.nn.Module, image: torch.Tensor, *, device: str = "cpu", autocast=None) -> torch.Tensor:
    """``image`` (C, D, H, W) -> its reconstruction through the posterior mean, (C, D, H, W) float32
    on the CPU. ``autocast``: a context-manager factory (e.g. bf16) or None."""
    was = model.training
    model.eval()
    try:
        with autocast() if autocast is not None else contextlib.nullcontext():
            mean, _ = model.encode(image[None].to(device))
            out = model.decode(mean)
    finally:
        model.train(was)
    return out[0].float().cpu()


def write_reconstruction_preview(model: torch.nn.Module, item: dict[str, Any], path: str | Path, *, step: int,
                                 device: str = "cpu", autocast=None) -> Path:
    """Montage of ``item["image"]`` (C, D, H, W) and its reconstruction, ``item["labels"]`` outlined."""
    from synthkit.training.autoencoder_data import masked_psnr
    from synthkit.viz import montage

    image = item["image"].float()
    recon = reconstruct(model, image, device=device, autocast=autocast)
    labels = item["labels"]
    head = labels > 0
    vols, masks, titles = [], [], []
    for c in range(min(int(image.shape[0]), 4)):
        x = image[c]
        if head.any():
            rng = float(x[head].max() - x[head].min()) or 1.0
            psnr = f"{masked_psnr(x, recon[c], head, rng):.1f} dB"
        else:
            psnr = "n/a"
        vols += [x.numpy(), recon[c].numpy()]
        masks += [labels.numpy(), labels.numpy()]
        titles += [f"real ch{c}", f"recon ch{c} step {step} ({psnr})"]
    return montage(vols, masks, titles, Path(path), window=(-1.0, 1.0))
