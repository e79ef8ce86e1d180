"""Trivial synthetic sets for sanity checks: a real generator must score better than these.

* :func:`blurred` — every real volume Gaussian-blurred (``sigma`` voxels): right anatomy, no
  texture (what a regression-to-the-mean generator produces).
* :func:`noise_in_mask` — per case, Gaussian noise with the foreground's mean and std inside the
  foreground (mask > 0 where the case has a mask, else the intensity foreground) and the
  volume's minimum outside: right histogram moments and silhouette, no anatomy.

Both write a flat folder of NIfTI files named by case id (``<out>/<case_id>.nii.gz``, clean
headers via :func:`synthkit.io.write_nifti`, real affine kept) so that MSE / MS-SSIM pair them
with the real cases. Deterministic given ``seed``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["blurred", "noise_in_mask"]


def _cases(real_dir: str | Path):
    from synthkit.metrics.evaluate import list_cases

    return list_cases(real_dir)


def blurred(real_dir: str | Path, out_dir: str | Path, sigma: float = 2.0) -> Path:
    """Write the Gaussian-blurred real volumes to ``out_dir``; returns ``out_dir``."""
    from scipy.ndimage import gaussian_filter

    from synthkit.io.cohort import Case, read_image
    from synthkit.io.nifti import write_nifti

    out = Path(out_dir)
    for cid, files, _ in _cases(real_dir):
        vol = read_image(Case(cid, files, None))
        data = np.stack([gaussian_filter(c, sigma) for c in vol.data]).astype(np.float32)
        write_nifti(out / f"{cid}.nii.gz", data, vol.affine)
    return out


def noise_in_mask(real_dir: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """Write per-case foreground-moment-matched Gaussian noise to ``out_dir``."""
    from synthkit.io.cohort import Case, read_image
    from synthkit.io.nifti import read_nifti, write_nifti
    from synthkit.metrics.features import foreground

    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    for cid, files, mask in _cases(real_dir):
        vol = read_image(Case(cid, files, None))
        m = read_nifti(mask, is_label=True).data[0] > 0 if mask is not None else None
        chans = []
        for c in vol.data:
            fg = m if m is not None and m.shape == c.shape else foreground(c)
            vals = c[fg] if fg.any() else c.ravel()
            noisy = np.full(c.shape, float(c.min()), dtype=np.float32)
            noisy[fg] = rng.normal(float(vals.mean()), float(vals.std()) + 1e-6, int(fg.sum()))
            chans.append(noisy)
        write_nifti(out / f"{cid}.nii.gz", np.stack(chans), vol.affine)
    return out
