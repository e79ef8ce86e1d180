"""Augmented training sets written as nnU-Net v2 raw datasets.

* :mod:`~synthkit.augment.classic`: the classic (nnU-Net-style, torchio) augmentation baseline;
* :mod:`~synthkit.augment.dataset`: writing an nnU-Net raw dataset and
  :func:`validate_nnunet_dataset`;
* :mod:`~synthkit.augment.pipeline`: :func:`augment_cohort` (perturbed masks -> generated
  images, or classic copies, optionally mixed with the real cases).

Submodules are imported on first use.
"""

from __future__ import annotations

from synthkit._lazy import lazy_getattr

_API = {
    "ClassicAugmentConfig": "synthkit.augment.classic",
    "augment_case": "synthkit.augment.classic",
    "NnunetDatasetWriter": "synthkit.augment.dataset",
    "validate_nnunet_dataset": "synthkit.augment.dataset",
    "augment_cohort": "synthkit.augment.pipeline",
}

__all__ = [
    "ClassicAugmentConfig",
    "NnunetDatasetWriter",
    "augment_case",
    "augment_cohort",
    "validate_nnunet_dataset",
]


__getattr__ = lazy_getattr(__name__, _API)
