"""From raw cases to network inputs and back: orientation, spacing, crop/pad, intensity,
one-hot masks (:mod:`synthkit.preprocess.case`), on one implementation of voxel-grid
reorientation and resampling (:mod:`synthkit.preprocess.grid`).

Names are imported lazily: ``from synthkit.preprocess import reorient`` does not import torch.
"""

from __future__ import annotations

from synthkit._lazy import lazy_dir, lazy_getattr

_API: dict[str, str] = {
    "GridRecord": "synthkit.preprocess.case",
    "add_brain_label": "synthkit.preprocess.case",
    "Preprocessed": "synthkit.preprocess.case",
    "RECORD_VERSION": "synthkit.preprocess.case",
    "one_hot": "synthkit.preprocess.case",
    "preprocess_case": "synthkit.preprocess.case",
    "remap_labels": "synthkit.preprocess.case",
    "to_original_grid": "synthkit.preprocess.case",
    "apply_ornt": "synthkit.preprocess.grid",
    "parse_orientation": "synthkit.preprocess.grid",
    "reorient": "synthkit.preprocess.grid",
    "resample": "synthkit.preprocess.grid",
    "resize": "synthkit.preprocess.grid",
    "to_ras": "synthkit.preprocess.grid",
    "undo_ornt": "synthkit.preprocess.grid",
}

__all__ = [*sorted(_API)]  # noqa: PLE0604 (the lazy names are the keys of _API)


__getattr__ = lazy_getattr(__name__, _API)

__dir__ = lazy_dir(__all__)
