"""Feature space for the memorization check: pretrained 3D embeddings of prepared volumes.

Prepared volumes (see :func:`synthkit.privacy.audit.memorization.prepare`: RAS, comparison grid,
zero outside the head) get the preprocessing of the chosen extractor
(:class:`synthkit.metrics.extractors.Extractor`): deepbet's own normalisation for the default
pretrained deepbet encoder, or, for MedicalNet, histogram equalization over the head voxels then
MedicalNet's z-score over nonzero voxels. Each channel is embedded separately and the features
concatenated: ``(N, C, D, H, W) -> (N, C * F)``.

The default (:func:`synthkit.privacy.audit.make_extractor` without weights) is the pretrained
deepbet encoder, so the feature rule flags. A seeded, randomly initialised MedicalNet
(:class:`MedicalNetExtractor` without weights) is reported but does not flag volumes
(``pretrained`` is False): on demo-cohort heads a random-feature bound flagged 1 of 40 fresh
volumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


class FeatureSpace:
    """Callable ``(N, C, D, H, W) float32 -> (N, C * F) float64`` around a metrics extractor;
    ``name`` says which network and weights, ``pretrained`` whether its distances may flag."""

    def __init__(self, extractor: Any):
        self.extractor = extractor
        ext = extractor
        digest = "random weights" if ext.kind == "random" else f"weights sha256 {ext.weights[:12]}"
        seed = f", seed {ext.seed}; no pretrained weights given" if ext.kind == "random" else ""
        self.name = f"{ext.short} ({digest}{seed})"
        self.pretrained = bool(ext.pretrained)
        self.model = ext.model

    def __call__(self, volumes: np.ndarray) -> np.ndarray:
        v = np.asarray(volumes, dtype=np.float32)
        if v.ndim != 5:
            raise ValueError(f"expected prepared volumes (N, C, D, H, W), got shape {v.shape}")
        if len(v) == 0:
            return np.zeros((0, v.shape[1] * self.extractor.feature_dim))
        out = []
        for i in range(0, len(v), 4):  # bounded memory: deepbet's input is 128^3 per channel
            prepared = np.stack([self.extractor.prepare(x, None, nonzero_is_head=True) for x in v[i:i + 4]])
            out.append(self.extractor.embed(prepared))
        return np.concatenate(out).astype(np.float64)


class MedicalNetExtractor(FeatureSpace):
    """MedicalNet from ``weights`` (or ``$SYNTHKIT_MEDICALNET_WEIGHTS``), else a seeded random
    MedicalNet (reported, never flags)."""

    def __init__(self, weights: str | Path | None = None, *, depth: int = 10, seed: int = 0,
                 batch_size: int = 8, device: str = "cpu"):
        from synthkit.metrics import medicalnet
        from synthkit.metrics.extractors import make_extractor

        if weights is None:
            weights = medicalnet.default_weights_path()
        ext = make_extractor(weights, depth, seed=seed, device=device,
                             features="medicalnet" if weights is not None else "random")
        ext.batch_size = batch_size
        super().__init__(ext)
