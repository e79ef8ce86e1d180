"""Volume preprocessing for the MedicalNet features (Med-DDPM's 3D-FID), MSE / MS-SSIM scaling,
and the feature cache shared by every extractor (deepbet's own preprocessing is in
:mod:`synthkit.metrics.deepbet`; which one applies is :class:`synthkit.metrics.extractors.Extractor`).

Exactly what happens to every volume for MedicalNet, real and synthetic alike (:func:`prepare`):

1. **Common grid.** Each channel ``(D, H, W)`` is resized in voxel space to the evaluation grid
   (by default the most common shape of the real set) with trilinear interpolation
   (``F.interpolate(..., align_corners=False)``); volumes already on the grid are untouched.
2. **Foreground.** ``fg = v > p1 + 0.05 * (p99 - p1)`` where ``p1`` / ``p99`` are the 1st and
   99th percentiles of the volume: the near-background floor (exact zeros of skull-stripped MRI,
   or the faint noise a generator leaves there) is background.
3. **Histogram equalization over the foreground** (Med-DDPM's extended 3D-FID): a 256-bin
   histogram of the foreground values over ``[min_fg, max_fg]``, its cumulative distribution
   normalised to end at 1, and every foreground voxel mapped to the CDF linearly interpolated
   at the bin centres (scikit-image's ``equalize_hist`` with a mask). Foreground values land in
   ``(0, 1]``; background voxels are set to 0.
4. **MedicalNet normalisation.** z-score with the mean and standard deviation of the nonzero
   (foreground) voxels, as MedicalNet's ``itensity_normalize_one_volume``; background stays 0
   (MedicalNet fills it with N(0, 1) noise during training; 0 is that noise's mean and keeps the
   features deterministic).

Features: each channel is fed separately to the extractor as ``(1, 1, D, H, W)`` and the
per-channel vectors are concatenated, ``(C * F,)`` per volume.

For MSE / MS-SSIM the volume is instead scaled to ``[0, 1]`` with ``(v - vmin) / (p99.5 - vmin)``
clipped (:func:`unit_range`), whole volume, no masking, ``data_range = 1``.

**Feature cache.** Features are stored as ``<cache>/features/<key>.npy`` (no pickle) where the
key is a SHA-256 of the volume's file *contents*, the extractor identity (network, weights
SHA-256 or the random seed, its preprocessing version), the grid and :data:`PREP_VERSION`. ``<cache>`` is
``$SYNTHKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/synthkit``, else ``~/.cache/synthkit``; nothing is
ever written into the input folders.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from synthkit.io.atomic import atomic_path
from synthkit.preprocess.intensity import foreground

__all__ = [
    "CACHE_ENV",
    "EQUALIZATION_DOC",
    "PREP_VERSION",
    "FeatureCache",
    "default_cache_dir",
    "equalize_foreground",
    "extract",
    "foreground",
    "medicalnet_normalize",
    "prepare",
    "resize_to",
    "unit_range",
]

CACHE_ENV = "SYNTHKIT_CACHE_DIR"
PREP_VERSION = "histeq256-fg5pct-zscore-nonzero-v1"
EQUALIZATION_DOC = (
    "per volume and channel: trilinear resize to the common grid; foreground = v > p1 + "
    "0.05*(p99 - p1); 256-bin histogram equalization over the foreground (CDF at bin centres, "
    "background 0); z-score over nonzero voxels (MedicalNet), background 0"
)


def default_cache_dir() -> Path:
    """``$SYNTHKIT_CACHE_DIR`` > ``$XDG_CACHE_HOME/synthkit`` > ``~/.cache/synthkit``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "synthkit"
    return Path.home() / ".cache" / "synthkit"


def resize_to(vol: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Trilinear resize of ``(C, D, H, W)`` to ``(C, *shape)`` (no-op if already there)."""
    if tuple(vol.shape[1:]) == tuple(shape):
        return np.ascontiguousarray(vol, dtype=np.float32)
    t = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[None]
    out = F.interpolate(t, size=tuple(int(s) for s in shape), mode="trilinear", align_corners=False)
    return out[0].numpy()


def equalize_foreground(v: np.ndarray, fg: np.ndarray | None = None, nbins: int = 256) -> np.ndarray:
    """Histogram equalization of ``v (D, H, W)`` computed over ``fg`` (default
    :func:`foreground`); returns float32 with foreground in ``(0, 1]`` and background 0."""
    v = np.asarray(v, dtype=np.float32)
    fg = foreground(v) if fg is None else fg.astype(bool)
    out = np.zeros_like(v, dtype=np.float32)
    vals = v[fg]
    if vals.size == 0:
        return out
    lo, hi = float(vals.min()), float(vals.max())
    if hi <= lo:
        out[fg] = 1.0
        return out
    hist, edges = np.histogram(vals, bins=nbins, range=(lo, hi))
    cdf = np.cumsum(hist).astype(np.float64)
    cdf /= cdf[-1]
    centres = (edges[:-1] + edges[1:]) / 2
    out[fg] = np.interp(vals, centres, cdf).astype(np.float32)
    return out


def medicalnet_normalize(v: np.ndarray) -> np.ndarray:
    """z-score over nonzero voxels (MedicalNet); zero voxels stay 0. ``(D, H, W)`` float32."""
    v = np.asarray(v, dtype=np.float32)
    nz = v != 0
    out = np.zeros_like(v)
    if nz.sum() < 2:
        return out
    vals = v[nz].astype(np.float64)
    std = float(vals.std())
    out[nz] = ((vals - vals.mean()) / (std if std > 0 else 1.0)).astype(np.float32)
    return out


def prepare(vol: np.ndarray) -> np.ndarray:
    """Extractor input for ``(C, D, H, W)`` on the common grid: equalize + z-score per channel."""
    return np.stack([medicalnet_normalize(equalize_foreground(c)) for c in vol]).astype(np.float32)


def unit_range(vol: np.ndarray) -> np.ndarray:
    """``(C, D, H, W)`` -> ``[0, 1]`` per channel: ``(v - min) / (p99.5 - min)``, clipped."""
    out = np.empty(vol.shape, dtype=np.float32)
    for i, c in enumerate(vol):
        lo, hi = float(c.min()), float(np.percentile(c, 99.5))
        if hi <= lo:
            hi = lo + 1.0
        out[i] = np.clip((c - lo) / (hi - lo), 0.0, 1.0)
    return out


class FeatureCache:
    """Feature vectors on disk keyed by content hash (see the module docstring)."""

    def __init__(self, root: Path | None, extractor_id: str, grid: Sequence[int]):
        self.dir = None if root is None else Path(root) / "features"
        self.salt = f"{PREP_VERSION}|{extractor_id}|{tuple(int(g) for g in grid)}"

    def key(self, content_sha256: str) -> str:
        return hashlib.sha256(f"{self.salt}|{content_sha256}".encode()).hexdigest()

    def get(self, key: str) -> np.ndarray | None:
        if self.dir is None:
            return None
        p = self.dir / f"{key}.npy"
        if not p.is_file():
            return None
        try:
            return np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            return None

    def put(self, key: str, feats: np.ndarray) -> None:
        if self.dir is None:
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(self.dir / f"{key}.npy", suffix=".npy") as tmp, open(tmp, "wb") as f:
            np.save(f, np.asarray(feats, dtype=np.float32), allow_pickle=False)


@torch.no_grad()
def extract(extractor: torch.nn.Module, vol: np.ndarray, device: str | torch.device = "cpu") -> np.ndarray:
    """Features ``(C * F,)`` of one prepared volume ``(C, D, H, W)`` (see :func:`prepare`)."""
    x = torch.from_numpy(np.ascontiguousarray(vol, dtype=np.float32))[:, None].to(device)  # (C,1,D,H,W)
    return extractor(x).reshape(-1).float().cpu().numpy()
