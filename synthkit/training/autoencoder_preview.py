"""Preview PNGs of autoencoder training: one whole preprocessed volume next to its reconstruction
(posterior mean, EMA weights), with the PSNR inside the head in the title."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch


@torch.no_grad()
def reconstruct(model: torch.nn.Module, image: torch.Tensor, *, device: str = "cpu", autocast=None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """``image`` (C, D, H, W) -> its reconstruction through the posterior mean, (C, D, H, W) float32
    on the CPU. ``autocast``: a context-manager factory (e.g. bf16) or None. ``mask``: the one-hot
    mask (K, D, H, W), for a decoder that reads it."""
    was = model.training
    model.eval()
    try:
        with autocast() if autocast is not None else contextlib.nullcontext():
            mean, _ = model.encode(image[None].to(device))
            out = model.decode(mean, None if mask is None else mask[None].to(device))
    finally:
        model.train(was)
    return out[0].float().cpu()


def write_reconstruction_preview(model: torch.nn.Module, item: dict[str, Any], path: str | Path, *, step: int,
                                 device: str = "cpu", autocast=None, mask_labels: tuple[int, ...] = ()) -> Path:
    """Montage of ``item["image"]`` (C, D, H, W) and its reconstruction, ``item["labels"]`` outlined
    (one-hot over ``mask_labels`` for a decoder that reads the mask)."""
    from synthkit.preprocess.case import one_hot
    from synthkit.training.autoencoder_data import masked_psnr
    from synthkit.viz import montage

    image = item["image"].float()
    labels = item["labels"]
    mask = one_hot(labels, mask_labels) if getattr(model, "needs_mask", False) else None
    recon = reconstruct(model, image, device=device, autocast=autocast, mask=mask)
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
