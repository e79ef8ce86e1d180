"""A tiny procedural head + tumour (an ellipsoid), without nilearn: the tests' volumes."""

from __future__ import annotations

import numpy as np

from synthkit.io.volume import Volume


def phantom(size: int = 16, seed: int = 0, channels: int = 1) -> tuple[Volume, Volume]:
    """A tiny procedural head: ellipsoid ``head`` (label 1) with a spherical ``tumour`` (label 2).

    Returns ``(image, mask)``: image ``(channels, size, size, size)`` float32 (each channel a
    different contrast, plus noise), mask ``(1, size, size, size)`` int16; affine: 1.5 mm
    isotropic RAS with the volume centred on the origin. Deterministic per ``seed``.
    """
    if size < 8:
        raise ValueError("phantom size must be at least 8")
    rng = np.random.default_rng([seed, 7919])
    grid = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float64)] * 3, indexing="ij"))
    centre = (size - 1) / 2.0 + rng.uniform(-0.5, 0.5, 3)
    semi = size * rng.uniform(0.34, 0.44, 3)
    r2 = (((grid - centre[:, None, None, None]) / semi[:, None, None, None]) ** 2).sum(0)
    head = r2 < 1.0
    # tumour: a sphere well inside the head
    t_rad = max(1.5, size * rng.uniform(0.08, 0.13))
    direction = rng.normal(size=3)
    direction /= np.linalg.norm(direction)
    t_centre = centre + direction * semi * rng.uniform(0.0, 0.35)
    dt = np.sqrt(((grid - t_centre[:, None, None, None]) ** 2).sum(0))
    tumour = (dt < t_rad) & head
    labels = head.astype(np.int16)
    labels[tumour] = 2

    image = np.empty((channels, size, size, size), np.float32)
    for c in range(channels):
        tissue = 0.5 + 0.1 * c + 0.15 * np.cos(np.sqrt(r2) * 3.0 + c)
        img = np.where(head, tissue, 0.02)
        img = np.where(tumour, 1.0 - 0.3 * c * (dt < t_rad * 0.5), img)
        image[c] = img + rng.normal(0, 0.02, img.shape)
    spacing = 1.5
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -spacing * (size - 1) / 2.0
    return Volume(image, affine), Volume(labels[None], affine.copy())
