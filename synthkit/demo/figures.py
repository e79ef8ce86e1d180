"""PNG pictures of the demo page: one volume per picture, axial / coronal / sagittal slices
through the tumour with the mask outlined (:func:`synthkit.viz.montage`), so the page can put
a real case and its synthetic twin side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

CELL_INCHES = 1.6


def _row(volume: np.ndarray, mask: np.ndarray | None, title: str, path: Path) -> Path:
    """``volume`` ``(D, H, W)`` (RAS storage), ``mask`` ``(D, H, W)`` -> one-row PNG at ``path``."""
    from synthkit.viz import montage

    return montage([volume], [mask], [title], path, cell_inches=CELL_INCHES)


def case_png(case: Any, title: str, path: str | Path) -> Path:
    """Picture of a cohort case (first image channel, mask outlined), reoriented to RAS."""
    from synthkit.io.cohort import read_image, read_mask
    from synthkit.preprocess import reorient

    img = read_image(case)
    data = reorient(img.data, img.affine, "RAS")[0][0]
    mask = None
    if case.mask is not None:
        m = read_mask(case)
        mask = reorient(m.data[0], m.affine, "RAS")[0]
    return _row(data, mask, title, Path(path))


def nifti_png(image: str | Path, mask: str | Path | None, title: str, path: str | Path) -> Path:
    """Picture of an image NIfTI (first channel) with a label NIfTI outlined, reoriented to RAS."""
    from synthkit.io.nifti import read_nifti
    from synthkit.preprocess import reorient

    img = read_nifti(image)
    data = reorient(img.data, img.affine, "RAS")[0][0]
    labels = None
    if mask is not None:
        m = read_nifti(mask, is_label=True)
        labels = reorient(m.data[0], m.affine, "RAS")[0]
    return _row(data, labels, title, Path(path))
