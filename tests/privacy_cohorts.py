"""Test cohorts for the privacy checks, built with numpy/scipy in well under a second.

``shared_anatomy`` subjects all carry ONE texture (as atlas-registered, skull-stripped cohorts
do: BraTS puts every case on one template), and differ only in head shape (ellipsoid axes
plus smooth bumps of the outline, and a small pose change) and in their tumour. Two different
subjects therefore correlate highly voxel by voxel. ``near_copy`` and ``warped_copy`` make
copies of a subject the way a memorising generator might.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SPACING = 1.5


def _smooth(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    return f / (f.std() + 1e-12)


def _rician(x: np.ndarray, rng: np.random.Generator, sigma: float) -> np.ndarray:
    """Magnitude-image noise (as MRI has): |x + n1 + i n2|, n ~ N(0, sigma^2)."""
    return np.sqrt((x + rng.normal(0, sigma, x.shape)) ** 2 + rng.normal(0, sigma, x.shape) ** 2)


def texture(size: int, seed: int = 1234) -> np.ndarray:
    """The shared anatomy on the canonical grid: (size,)*3 float64 in about [0.3, 0.9]."""
    rng = np.random.default_rng([seed, 0xA7])
    return 0.6 + 0.15 * _smooth(rng, (size,) * 3, size / 8) + 0.04 * _smooth(rng, (size,) * 3, 1.0)


def _rotation(deg: np.ndarray) -> np.ndarray:
    a = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(a[0]), -np.sin(a[0])], [0, np.sin(a[0]), np.cos(a[0])]])
    ry = np.array([[np.cos(a[1]), 0, np.sin(a[1])], [0, 1, 0], [-np.sin(a[1]), 0, np.cos(a[1])]])
    rz = np.array([[np.cos(a[2]), -np.sin(a[2]), 0], [np.sin(a[2]), np.cos(a[2]), 0], [0, 0, 1]])
    return rz @ ry @ rx


def subject(i: int, size: int = 24, seed: int = 0, tex: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Subject ``i``: image (1, size, size, size) float32, labels (1, ...) int16 (1 head,
    2 tumour), affine (4, 4) (1.5 mm, RAS, centred)."""
    tex = texture(size) if tex is None else tex
    rng = np.random.default_rng([seed, i, 0x5A])
    c = (size - 1) / 2
    grid = np.indices((size,) * 3, dtype=np.float64).reshape(3, -1) - c
    # pose: canonical point = R^-1 (x - shift); head outline: ellipsoid with smooth radial bumps
    rot = _rotation(rng.uniform(-2, 2, 3))
    canon = rot.T @ (grid - rng.uniform(-0.7, 0.7, 3)[:, None])
    semi = size * rng.uniform(0.36, 0.40, 3)
    r = np.sqrt(((canon / semi[:, None]) ** 2).sum(0))
    bumps = ndimage.map_coordinates(_smooth(rng, (6, 6, 6), 1.0), 2.5 + 2.5 * canon / (size / 2), order=1,
                                    mode="nearest")
    head = r * (1 + 0.12 * bumps) < 1.0
    img = ndimage.map_coordinates(tex, canon + c, order=1, mode="nearest")
    img = np.where(head, img, 0.0)
    rim = head & (r * (1 + 0.12 * bumps) > 0.85)
    img = np.where(rim, img + 0.1, img)  # a bright scalp band, the same in everyone
    # tumour: a blob inside the head
    t_rad = rng.uniform(2.0, 3.5)
    inner = np.argwhere(ndimage.distance_transform_edt(head.reshape((size,) * 3)) > t_rad + 1.5)
    t_c = inner[rng.integers(len(inner))] - c
    d = np.sqrt(((grid - t_c[:, None]) ** 2).sum(0))
    tumour = (d < t_rad * (1 + 0.2 * _smooth(rng, (size,) * 3, 2.0).ravel())) & head
    img = np.where(tumour, 1.25 + 0.1 * np.cos(d), img)
    img = _rician(img, rng, 0.02)
    labels = head.astype(np.int16)
    labels[tumour] = 2
    aff = np.diag([SPACING] * 3 + [1.0])
    aff[:3, 3] = -SPACING * c
    shape = (1, size, size, size)
    return img.reshape(shape).astype(np.float32), labels.reshape(shape), aff


def cohort(indices, size: int = 24, seed: int = 0, prefix: str = "case_") -> list[tuple]:
    """Items ``(id, image, affine, labels)`` of :func:`subject` for each index (one texture)."""
    tex = texture(size)
    out = []
    for i in indices:
        img, lab, aff = subject(i, size, seed, tex)
        out.append((f"{prefix}{i:03d}", img, aff, lab))
    return out


def near_copy(image: np.ndarray, rng: np.random.Generator, *, shift=(1, 0, 0), noise: float = 0.05) -> np.ndarray:
    """A one-voxel-shifted copy with magnitude noise of ``noise`` x the image's s.d."""
    out = np.roll(image, shift, axis=(1, 2, 3)).astype(np.float64)
    return _rician(out, rng, noise * float(image.std())).astype(np.float32)


def warped_copy(image: np.ndarray, rng: np.random.Generator, *, rotation: float = 3.0, scale: float = 0.03,
                shift: float = 1.0, elastic: float = 1.0, gamma: float = 0.2, bias: float = 0.1,
                noise: float = 0.05) -> np.ndarray:
    """A copy under a small affine + elastic warp, a gamma and a smooth bias field, plus noise."""
    size = image.shape[1:]
    c = (np.asarray(size) - 1) / 2
    grid = np.indices(size, dtype=np.float64).reshape(3, -1)
    a = _rotation(rng.uniform(-rotation, rotation, 3)) * (1 + rng.uniform(-scale, scale))
    src = np.linalg.inv(a) @ (grid - c[:, None] - rng.uniform(-shift, shift, 3)[:, None]) + c[:, None]
    disp = np.stack([ndimage.zoom(rng.uniform(-elastic, elastic, (4, 4, 4)), np.asarray(size) / 4, order=3)
                     for _ in range(3)])
    src = src + disp.reshape(3, -1)
    out = np.empty_like(image, dtype=np.float64)
    for ch in range(image.shape[0]):
        x = ndimage.map_coordinates(image[ch].astype(np.float64), src, order=1, mode="nearest").reshape(size)
        hi = x.max()
        x01 = np.clip(x / hi, 0, 1) ** np.exp(rng.uniform(-gamma, gamma))
        field = np.exp(bias * ndimage.zoom(rng.normal(size=(3, 3, 3)), np.asarray(size) / 3, order=3))
        out[ch] = x01 * field * hi
    return _rician(out, rng, noise * float(image.std())).astype(np.float32)


def individual(indices, size: int = 16, seed: int = 0, prefix: str = "case_") -> list[tuple]:
    """Items ``(id, image, affine, labels)`` of subjects that each have their OWN texture (an
    anatomy the mask does not determine): what a model can only reproduce by memorising it."""
    out = []
    for i in indices:
        img, lab, aff = subject(i, size, seed, texture(size, seed=10_000 + i))
        out.append((f"{prefix}{i:03d}", img, aff, lab))
    return out


def write_cohort(root, items, channel: str = "T1") -> None:
    """Write items as an nnU-Net raw cohort (``imagesTr``, ``labelsTr``, ``dataset.json``)."""
    from pathlib import Path

    from synthkit.io import write_nifti, write_nnunet_dataset_json

    root = Path(root)
    for cid, img, aff, lab in items:
        write_nifti(root / "imagesTr" / f"{cid}_0000.nii.gz", img, aff)
        write_nifti(root / "labelsTr" / f"{cid}.nii.gz", lab, aff, is_label=True)
    write_nnunet_dataset_json(root, (channel,), {"background": 0, "head": 1, "tumour": 2}, len(items))
