"""Controls: sets built from the real cohort to fail one metric each. A metric earns trust by
flagging the control made to fail it; a real generator must score better than all of them.

* :func:`blurred` — every real volume Gaussian-blurred (``sigma`` voxels): right anatomy, no
  texture (what a regression-to-the-mean generator produces). Fails the spectrum.
* :func:`noise_in_mask` — per case, Gaussian noise with the foreground's mean and std inside the
  foreground (mask > 0 where the case has a mask, else the intensity foreground) and the
  volume's minimum outside: right histogram moments and silhouette, no anatomy.
* :func:`labels_erased` — the real volume with every label that sits inside the head (the
  tumour; not the enclosing ``head`` label) filled in from its surroundings: nearest outside
  intensity, smoothed, plus noise of the surroundings' fine-scale sd. Right anatomy and texture,
  no lesion where the mask has one. Fails label contrast and segmentation Dice.
* :func:`texture_scrambled` — the real volume whose tissue region
  (:func:`synthkit.metrics.tissue.tissue_region`: the head away from the labels) is replaced by
  smooth Gaussian blobs (``sigma`` voxels) with the region's mean and sd. Right silhouette,
  labels and histogram moments, no tissue. Fails the spectrum, CJV and intensity distance.

Each writes the real case ids with their masks (an nnU-Net raw dataset: ``imagesTr``,
``labelsTr``, ``dataset.json``; clean headers, real affine kept) so paired metrics and label
fidelity use them; a real set without masks gives a flat folder ``<out>/<case_id>.nii.gz``.
Deterministic given ``seed``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import ndimage

__all__ = ["CONTROLS", "blurred", "labels_erased", "noise_in_mask", "texture_scrambled", "write_controls"]


def _write_set(real_dir: str | Path, out_dir: str | Path,
               change: Callable[[np.ndarray, np.ndarray | None, np.random.Generator], np.ndarray],
               seed: int = 0) -> Path:
    """Apply ``change(image (C, D, H, W), mask (D, H, W) or None, rng)`` to every real case and
    write the results (module docstring)."""
    from synthkit.io.cohort import Case, discover_cohort, read_image
    from synthkit.io.nifti import read_nifti, write_nifti
    from synthkit.io.nnunet import NnunetWriter
    from synthkit.io.volume import Volume
    from synthkit.metrics.evaluate import list_cases

    out = Path(out_dir)
    cases = list_cases(real_dir)
    writer = None
    if any(m is not None for _, _, m in cases):
        try:
            labels = discover_cohort(real_dir, need_images=False).labels or None
        except Exception:  # noqa: BLE001 - a plain folder: labels from the masks themselves
            labels = None
        writer = NnunetWriter(out, labels=labels, existing="replace")
    values: set[int] = set()
    for k, (cid, files, mask_path) in enumerate(cases):
        vol = read_image(Case(cid, files, None))
        label = read_nifti(mask_path, is_label=True) if mask_path is not None else None
        mask = label.data[0] if label is not None and label.data.shape[1:] == vol.data.shape[1:] else None
        data = change(np.asarray(vol.data, dtype=np.float32), mask, np.random.default_rng([seed, k]))
        if writer is not None and label is not None and mask is not None:
            writer.write_case(cid, Volume(data.astype(np.float32), vol.affine), Volume(label.data, vol.affine))
            values.update(int(v) for v in np.unique(label.data))
        else:
            write_nifti(out / f"{cid}.nii.gz", data.astype(np.float32), vol.affine)
    if writer is not None and writer.case_ids:
        labels = writer.labels or {"background": 0, **{f"label_{v}": v for v in sorted(values) if v}}
        writer.finish(labels=None if writer.labels is not None else labels)
    return out


def blurred(real_dir: str | Path, out_dir: str | Path, sigma: float = 2.0) -> Path:
    """Write the Gaussian-blurred real volumes to ``out_dir``; returns ``out_dir``."""
    return _write_set(real_dir, out_dir, lambda img, m, rng: np.stack([ndimage.gaussian_filter(c, sigma) for c in img]))


def noise_in_mask(real_dir: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """Write per-case foreground-moment-matched Gaussian noise to ``out_dir``."""
    from synthkit.preprocess.intensity import foreground

    def change(img: np.ndarray, m: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        chans = []
        for c in img:
            fg = m > 0 if m is not None else foreground(c)
            vals = c[fg] if fg.any() else c.ravel()
            noisy = np.full(c.shape, float(c.min()), dtype=np.float32)
            noisy[fg] = rng.normal(float(vals.mean()), float(vals.std()) + 1e-6, int(fg.sum()))
            chans.append(noisy)
        return np.stack(chans)

    return _write_set(real_dir, out_dir, change, seed)


def _inner_labels(mask: np.ndarray) -> np.ndarray:
    """Voxels of the labels that sit inside the head: all but the enclosing label."""
    from synthkit.metrics.label_fidelity import enclosing_label

    return (mask > 0) & (mask != enclosing_label(mask))


def labels_erased(real_dir: str | Path, out_dir: str | Path, seed: int = 0) -> Path:
    """Write the real volumes with their inner labels filled in from the surroundings."""
    def change(img: np.ndarray, m: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        if m is None:
            return img
        out = img.copy()
        for c, ch in enumerate(img):
            hole = ndimage.binary_dilation(_inner_labels(m), iterations=1)
            if not hole.any():
                continue
            _, idx = ndimage.distance_transform_edt(hole, return_indices=True)
            filled = ndimage.gaussian_filter(ch[tuple(idx)], 2.0)
            ring = ndimage.binary_dilation(hole, iterations=3) & ~hole
            fine = (ch - ndimage.gaussian_filter(ch, 1.0))[ring]
            out[c][hole] = filled[hole] + rng.normal(0.0, float(fine.std()) if fine.size else 0.0, int(hole.sum()))
        return out

    return _write_set(real_dir, out_dir, change, seed)


def texture_scrambled(real_dir: str | Path, out_dir: str | Path, seed: int = 0, sigma: float = 3.0) -> Path:
    """Write the real volumes with their tissue region replaced by smooth moment-matched blobs."""
    from synthkit.metrics.tissue import tissue_region

    def change(img: np.ndarray, m: np.ndarray | None, rng: np.random.Generator) -> np.ndarray:
        out = img.copy()
        for c, ch in enumerate(img):
            region = tissue_region(ch, m, margin=1)
            if not region.any():
                continue
            blobs = ndimage.gaussian_filter(rng.standard_normal(ch.shape).astype(np.float32), sigma)
            z = (blobs[region] - blobs[region].mean()) / (blobs[region].std() or 1.0)
            out[c][region] = float(ch[region].mean()) + float(ch[region].std()) * z
        return out

    return _write_set(real_dir, out_dir, change, seed)


#: name on the page -> builder ``(real_dir, out_dir, seed) -> out_dir``
CONTROLS: dict[str, Callable[[Path, Path, int], Path]] = {
    "blurred real": lambda r, o, s: blurred(r, o),
    "noise in mask": noise_in_mask,
    "labels erased": labels_erased,
    "texture scrambled": texture_scrambled,
}


def write_controls(real_dir: str | Path, out_dir: str | Path, seed: int = 0) -> dict[str, Path]:
    """Every control of :data:`CONTROLS` under ``out_dir/<name with underscores>``."""
    return {name: build(Path(real_dir), Path(out_dir) / name.replace(" ", "_"), seed)
            for name, build in CONTROLS.items()}
