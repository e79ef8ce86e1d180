"""Augmented training sets written as nnU-Net v2 raw datasets.

* :mod:`~synthkit.augment.classic`: the classic (nnU-Net-style, torchio) augmentation baseline;
* :mod:`~synthkit.augment.dataset`: writing an nnU-Net raw dataset and
  :func:`validate_nnunet_dataset`;
* :mod:`~synthkit.augment.pipeline`: :func:`augment_cohort` (perturbed masks -> generated
  images, or classic copies, optionally mixed with the real cases).

Submodules are imported on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

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


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'synthkit.augment' has no attribute {name!r}")
