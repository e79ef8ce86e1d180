"""Feature space for the memorization check: MedicalNet (Chen et al. 2019) embeddings.

Prepared volumes (see :func:`synthkit.privacy.memorization.prepare`: RAS, comparison grid,
zero outside the head) get the evaluation module's preprocessing
(:mod:`synthkit.metrics.features`): histogram equalization over the head voxels, then
MedicalNet's z-score over nonzero voxels. Each channel is embedded separately and the features
concatenated: ``(N, C, D, H, W) -> (N, C * F)``.

Without weights (no ``--feature-weights`` and no ``$SYNTHKIT_MEDICALNET_WEIGHTS``) a seeded,
randomly initialised network is used, as the evaluation module does. Its distances are
reported but do not flag volumes (``pretrained`` is False): on demo-cohort heads a random-feature
bound flagged 1 of 40 fresh volumes.
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
            self.pretrained = True
        else:
            self.model = medicalnet.build(depth, seed=seed)
            self.name = f"medicalnet-resnet{depth} (random weights, seed {seed}; no pretrained weights given)"
            self.pretrained = False
        self.model = self.model.to(device).eval()
        self.device = device
        self.batch_size = batch_size

    def __call__(self, volumes: np.ndarray) -> np.ndarray:
        import torch

        v = np.asarray(volumes, dtype=np.float32)
        if v.ndim != 5:
            raise ValueError(f"expected prepared volumes (N, C, D, H, W), got shape {v.shape}")
        from synthkit.metrics.features import equalize_foreground, medicalnet_normalize

        n, c = v.shape[:2]
        flat_np = v.reshape(n * c, *v.shape[2:])
        flat_np = np.stack([medicalnet_normalize(equalize_foreground(x, x != 0)) for x in flat_np])
        flat = torch.from_numpy(np.ascontiguousarray(flat_np[:, None], dtype=np.float32))
        out = []
        with torch.inference_mode():
            for i in range(0, flat.shape[0], self.batch_size):
                out.append(self.model(flat[i:i + self.batch_size].to(self.device)).double().cpu())
        feats = torch.cat(out).numpy() if out else np.zeros((0, self.model.out_features))
        return feats.reshape(n, c * feats.shape[-1])
