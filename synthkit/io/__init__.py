"""Cohort discovery, NIfTI / DICOM reading and writing, cohort validation.

Names are imported lazily, so ``import synthkit.io.atomic`` stays cheap::

    from synthkit.io import discover_cohort, read_image, read_mask, write_nifti
    cohort = discover_cohort("data/Dataset001")        # nnU-Net raw, flat, BraTS or DICOM
    for case in cohort:
        img, msk = read_image(case), read_mask(case)   # (C, D, H, W) float32, (1, D, H, W) int16
"""

from __future__ import annotations

from synthkit._lazy import lazy_dir, lazy_getattr

_API: dict[str, str] = {
    "Volume": "synthkit.io.volume",
    "grid_mismatch": "synthkit.io.volume",
    "spacing_from_affine": "synthkit.io.volume",
    "Case": "synthkit.io.cohort",
    "Cohort": "synthkit.io.cohort",
    "discover_cohort": "synthkit.io.cohort",
    "read_image": "synthkit.io.cohort",
    "read_mask": "synthkit.io.cohort",
    "read_nifti": "synthkit.io.nifti",
    "write_nifti": "synthkit.io.nifti",
    "read_dicom_series": "synthkit.io.dicom",
    "dicom_affine": "synthkit.io.dicom",
    "write_nnunet_dataset_json": "synthkit.io.nnunet",
    "read_dataset_json": "synthkit.io.nnunet",
    "CaseReport": "synthkit.io.check",
    "check_cohort": "synthkit.io.check",
}

__all__ = [
    "Case",
    "CaseReport",
    "Cohort",
    "Volume",
    "check_cohort",
    "dicom_affine",
    "discover_cohort",
    "grid_mismatch",
    "read_dataset_json",
    "read_dicom_series",
    "read_image",
    "read_mask",
    "read_nifti",
    "spacing_from_affine",
    "write_nifti",
    "write_nnunet_dataset_json",
]


__getattr__ = lazy_getattr(__name__, _API)

__dir__ = lazy_dir(__all__)
