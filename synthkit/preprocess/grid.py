"""Voxel grids: exact reorientation and separable resampling (the one implementation).

Every place in synthkit that reorients a volume to RAS or resizes one goes through here:
preprocessing (:mod:`synthkit.preprocess.case`), the segmentation benchmark, the privacy
comparison grid and the figures.

* :func:`reorient` permutes/flips voxel axes to an orientation code (``"RAS"``), exactly, as
  :mod:`nibabel.orientations` defines it (an oblique affine is matched to its closest axes).
* :func:`resample` samples ``(D, H, W)`` at ``scale * p + offset`` for every output index
  ``p`` (a diagonal transform), linearly or by nearest neighbour, axis by axis.
* :func:`resize` maps a whole ``(C, D, H, W)`` volume onto another shape with the two grids'
  outer edges aligned (voxel ``p`` of the output has its centre at ``(p + 0.5) * n_in / n_out
  - 0.5`` of the input: torch's ``align_corners=False``).

Nearest neighbour, one rule everywhere: the input voxel whose centre is closest, ties to the
higher index (``floor(q + 0.5)``), which is torch's ``mode="nearest-exact"`` and scipy's
``order=0``. Label maps are only ever resampled this way, never linearly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from synthkit.errors import UsageError


def parse_orientation(code: str) -> np.ndarray:
    """``"RAS"``/``"LPS"``/... -> nibabel orientation array ``(3, 2)``; UsageError if invalid."""
    import nibabel.orientations as nio

    code = str(code).upper()
    letters = set(code)
    valid = len(code) == 3 and all(
        sum(c in letters for c in pair) == 1 for pair in ("LR", "PA", "IS")
    )
    if not valid:
        raise UsageError(f"orientation {code!r} is not three axis codes like 'RAS' or 'LPS'")
    return nio.axcodes2ornt(tuple(code))


def reorient(
    arr: np.ndarray, affine: np.ndarray, orientation: str = "RAS"
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Permute/flip the last three axes of ``arr`` (``(..., D, H, W)``) to ``orientation``.

    Exact (no interpolation). Returns ``(array, new_affine, ornt)``; an oblique affine stays
    oblique, its axes are matched to the closest world axes. ``ornt`` undoes with
    :func:`undo_ornt`.
    """
    import nibabel.orientations as nio

    affine = np.asarray(affine, dtype=np.float64)
    ornt = nio.ornt_transform(nio.io_orientation(affine), parse_orientation(orientation))
    out, new_aff = apply_ornt(arr, affine, ornt)
    return out, new_aff, ornt


def to_ras(arr: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """``arr`` ``(..., D, H, W)`` with its voxel axes running R, A, S (closest axis match)."""
    return reorient(arr, affine, "RAS")[0]


def apply_ornt(
    arr: np.ndarray, affine: np.ndarray, ornt: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Apply a nibabel orientation transform to the last three axes; (array, new affine)."""
    import nibabel.orientations as nio

    shape = arr.shape[-3:]
    lead = arr.ndim - 3
    out = arr
    for ax, flip in enumerate(ornt[:, 1]):
        if flip == -1:
            out = np.flip(out, axis=lead + ax)
    order = list(range(lead)) + [lead + int(a) for a in np.argsort(ornt[:, 0])]
    out = np.ascontiguousarray(np.transpose(out, order))
    new_aff = np.asarray(affine) @ nio.inv_ornt_aff(ornt, shape)
    return out, new_aff


def undo_ornt(arr: np.ndarray, ornt: np.ndarray) -> np.ndarray:
    """Inverse of :func:`apply_ornt` on the last three axes."""
    lead = arr.ndim - 3
    # apply_ornt puts input axis a at output position ornt[a, 0]
    out = np.transpose(arr, list(range(lead)) + [lead + int(ornt[a, 0]) for a in range(3)])
    for ax, flip in enumerate(ornt[:, 1]):
        if flip == -1:
            out = np.flip(out, axis=lead + ax)
    return np.ascontiguousarray(out)


def resample(
    arr: np.ndarray,
    scale: np.ndarray,
    offset: np.ndarray,
    shape: tuple[int, ...],
    *,
    order: int,
    cval: float,
) -> np.ndarray:
    """Sample ``arr`` ``(D, H, W)`` at ``scale * p + offset`` for every output index ``p``.

    The transform is diagonal, so (tri)linear (``order=1``) and nearest-neighbour
    (``order=0``, the module's rule) interpolation are done axis by axis (separable, exact same
    result as the 3D interpolation, and much faster). A voxel covers its whole cell: points up
    to half a voxel outside the input take the edge value; farther out, ``cval``. Scale 1 with
    an integer offset is an exact copy. Returns float32 for ``order=1``, ``arr.dtype`` for 0.
    """
    out = arr if order == 0 else arr.astype(np.float32, copy=False)
    for ax in range(3):
        n = arr.shape[ax]
        q = scale[ax] * np.arange(shape[ax], dtype=np.float64) + offset[ax]
        valid = (q >= -0.5 - 1e-6) & (q <= n - 0.5 + 1e-6)
        qc = np.clip(q, 0.0, n - 1.0)
        if order == 0:
            out = np.take(out, np.floor(qc + 0.5).astype(np.intp), axis=ax)
        else:
            i0 = np.minimum(np.floor(qc).astype(np.intp), max(n - 2, 0))
            i1 = np.minimum(i0 + 1, n - 1)
            w = (qc - i0).astype(np.float32)
            bshape = [1, 1, 1]
            bshape[ax] = -1
            w = w.reshape(bshape)
            a = np.take(out, i0, axis=ax)
            out = a + (np.take(out, i1, axis=ax) - a) * w if np.any(w) else a
        if not valid.all():
            idx: list[Any] = [slice(None)] * 3
            idx[ax] = ~valid
            out[tuple(idx)] = cval
    return np.ascontiguousarray(out)


def resize(arr: np.ndarray, shape: tuple[int, int, int], *, label: bool = False) -> np.ndarray:
    """``(C, D, H, W)`` -> ``(C, *shape)``, the grids' outer edges aligned (module docstring).

    Images (``label=False``) are interpolated trilinearly and come back float32; label maps
    (``label=True``) by nearest neighbour, keeping their dtype. Same shape: returned as is.
    """
    arr = np.asarray(arr)
    if arr.ndim != 4:
        raise ValueError(f"expected (C, D, H, W), got shape {arr.shape}")
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    if tuple(arr.shape[1:]) == shape:
        return arr
    if label:
        # floor(q + 0.5) with q = (p + 0.5) * n_in / n_out - 0.5, in integers: exact at ties
        out = arr
        for ax, (n_in, n_out) in enumerate(zip(arr.shape[1:], shape, strict=True)):
            idx = ((2 * np.arange(n_out, dtype=np.int64) + 1) * n_in) // (2 * n_out)
            out = np.take(out, idx, axis=ax + 1)
        return np.ascontiguousarray(out)
    scale = np.asarray(arr.shape[1:], dtype=np.float64) / np.asarray(shape, dtype=np.float64)
    offset = 0.5 * scale - 0.5
    return np.stack([resample(c, scale, offset, shape, order=1, cval=0.0) for c in arr])
