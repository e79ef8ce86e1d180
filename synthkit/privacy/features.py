"""Feature space for the memorization check: MedicalNet (Chen et al. 2019) embeddings.

Prepared volumes (see :func:`synthkit.privacy.memorization.prepare`) are already standardised
inside the head with a zero background, which is the intensity normalisation MedicalNet was
trained with, so they go to the network as they are. Each channel is embedded separately and
the features concatenated: ``(N, C, D, H, W) -> (N, C * F)``.

Without weights (no ``--feature-weights`` and no ``$SYNTHKIT_MEDICALNET_WEIGHTS``) a seeded,
randomly initialised network is used, as the evaluation module does; its features still
separate copies from fresh volumes, but they are not the published MedicalNet space and the
report says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class MedicalNetExtractor:
    """Callable ``(N, C, D, H, W) float32 -> (N, C * F) float64``; ``name`` says which weights."""

    def __init__(self, weights: str | Path | None = None, *, depth: int = 10, seed: int = 0,
                 batch_size: int = 8, device: str = "cpu"):
        from synthkit.metrics import medicalnet

        if weights is None:
            weights = medicalnet.default_weights_path()
        if weights is not None:
            self.model = medicalnet.load(weights, depth=depth)
            self.name = f"medicalnet-resnet{depth} (weights sha256 {medicalnet.sha256_file(weights)[:12]})"
        else:
            self.model = medicalnet.build(depth, seed=seed)
            self.name = f"medicalnet-resnet{depth} (random weights, seed {seed}; no pretrained weights given)"
        self.model = self.model.to(device).eval()
        self.device = device
        self.batch_size = batch_size

    def __call__(self, volumes: np.ndarray) -> np.ndarray:
        import torch

        v = np.asarray(volumes, dtype=np.float32)
        if v.ndim != 5:
            raise ValueError(f"expected prepared volumes (N, C, D, H, W), got shape {v.shape}")
        n, c = v.shape[:2]
        flat = torch.from_numpy(np.ascontiguousarray(v.reshape(n * c, 1, *v.shape[2:])))
        out = []
        with torch.inference_mode():
            for i in range(0, flat.shape[0], self.batch_size):
                out.append(self.model(flat[i:i + self.batch_size].to(self.device)).double().cpu())
        feats = torch.cat(out).numpy() if out else np.zeros((0, self.model.out_features))
        return feats.reshape(n, c * feats.shape[-1])
