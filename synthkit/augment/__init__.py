"""What augmented training sets are made of, written as nnU-Net v2 raw datasets.

* :mod:`~synthkit.augment.classic`: the classic (nnU-Net-style, torchio) augmentation baseline;
* :mod:`~synthkit.augment.copies`: the copies that need no model (classic, real) and the label table;
* :mod:`~synthkit.augment.dataset`: writing an nnU-Net raw dataset and
  :func:`validate_nnunet_dataset`.

The ``synthkit augment`` job (perturbed masks -> generated images, or classic copies, optionally
mixed with the real cases) is :func:`synthkit.jobs.augment.augment_cohort`. Submodules are
imported on first use.
"""

from __future__ import annotations

from synthkit._lazy import lazy_getattr

_API = {
    "ClassicAugmentConfig": "synthkit.augment.classic",
    "augment_case": "synthkit.augment.classic",
    "NnunetDatasetWriter": "synthkit.augment.dataset",
    "validate_nnunet_dataset": "synthkit.augment.dataset",
}

__all__ = [
    "ClassicAugmentConfig",
    "NnunetDatasetWriter",
    "augment_case",
    "validate_nnunet_dataset",
]


__getattr__ = lazy_getattr(__name__, _API)
