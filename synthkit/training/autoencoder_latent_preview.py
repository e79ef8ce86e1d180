"""Preview PNGs of latent Med-DDPM training: a quick DDIM sample in latent space for one training
mask, decoded by the run's autoencoder, next to the real image (image grid, mask outlined)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from synthkit import noise as noise_rule


@torch.no_grad()
def write_latent_preview(trainer: Any, step: int, ae_dir: Path, sampling_steps: int = 8) -> None:
    """``trainer``: a LatentTrainer; ``ae_dir``: the autoencoder folder of its run; writes
    ``previews/step_XXXXXXXX.png`` in the run folder."""
    from synthkit.diffusion import sample
    from synthkit.networks.autoencoder import standardize_latents
    from synthkit.preprocess.case import one_hot
    from synthkit.training.autoencoder_eval import load_autoencoder
    from synthkit.viz import montage

    latent = trainer.dataset
    item, real = latent[0], latent.base[0]
    ae, ae_cfg = load_autoencoder(ae_dir, trainer.device)
    model = trainer.ema.model
    g = noise_rule.cpu_generator(trainer.cfg.train.seed)
    steps = max(1, min(sampling_steps, int(trainer.cfg.diffusion.timesteps)))
    was = model.training
    model.eval()
    try:
        z = sample(model, trainer.diffusion, item["cond"][None].to(trainer.device), sampler="ddim", steps=steps,
                   eta=0.0, generator=g, image_channels=latent.image_channels, clip_x0=False,
                   clamp_output=False)
    finally:
        model.train(was)
    z = standardize_latents(z, trainer.cfg.latent_shift, trainer.cfg.latent_scale, inverse=True)
    mask = one_hot(real["labels"], tuple(ae_cfg.preprocess.mask_labels))[None] if ae.needs_mask else None
    synth = ae.decode(z / float(ae_cfg.scale_factor), mask).clamp(-1, 1)[0].float().cpu()
    labels = real["labels"].numpy()
    image = real["image"].float()
    vols, masks, titles = [], [], []
    for c in range(min(int(image.shape[0]), 4)):
        vols += [image[c].numpy(), synth[c].numpy()]
        masks += [labels, labels]
        titles += [f"real ch{c}", f"latent sample ch{c} (step {step})"]
    montage(vols, masks, titles, trainer.run_dir / "previews" / f"step_{step:08d}.png", window=(-1.0, 1.0))
