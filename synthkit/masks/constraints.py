"""Invariants every mask operation keeps, checked after each ``apply``.

* the grid is kept (same shape; the affine is never touched);
* labels stay in the original set (plus the declared tumour labels, so a tumour can be placed
  in a healthy mask);
* the tumour stays inside the head: every tumour voxel of the result lies on the original
  head region (voxels whose original label is a head/brain label or a tumour label) - for
  operations that keep the head where it is;
* the tumour volume changes only as asked: within ``max(VOLUME_RTOL * expected, VOLUME_ATOL_VOX)``
  of the expected voxel count (nearest-neighbour rotation/scaling is not exactly volume
  preserving, hence the tolerance).

A violation raises :class:`ConstraintViolation`; samplers catch it and draw new parameters (a
bounded number of times). Anything that no resampling can fix raises :class:`MaskOpError`.
"""

from __future__ import annotations

import numpy as np

from synthkit.errors import SynthkitError
from synthkit.masks.params import OpParams

#: Relative volume tolerance for nearest-neighbour resampled objects.
VOLUME_RTOL = 0.10
#: Absolute slack in voxels, so tiny tumours (a few dozen voxels) are not rejected forever.
VOLUME_ATOL_VOX = 3.0


class MaskOpError(SynthkitError):
    """A mask operation cannot be done on this mask (no tumour, no head label, retries spent)."""


class ConstraintViolation(MaskOpError):
    """The parameters give a result that breaks an invariant; draw new parameters."""


def check_input(labels: np.ndarray, params: OpParams) -> None:
    """The mask must be a 3D integer label map on the grid the parameters were drawn for."""
    if labels.ndim != 3:
        raise MaskOpError(f"mask must be a 3D label map (D, H, W), got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise MaskOpError(f"mask must hold integer labels, got dtype {labels.dtype}")
    if tuple(labels.shape) != tuple(params.shape):
        raise MaskOpError(
            f"parameters were drawn for a {tuple(params.shape)} grid, the mask is {tuple(labels.shape)}"
        )


def tumour_of(labels: np.ndarray, params: OpParams) -> np.ndarray:
    """Boolean (D, H, W): voxels carrying any tumour label."""
    return np.isin(labels, params.tumour_labels)


def head_region(labels: np.ndarray, params: OpParams) -> np.ndarray:
    """Boolean (D, H, W): the head as the original mask draws it (head or tumour labels)."""
    return np.isin(labels, params.head_labels + params.tumour_labels)


def check_result(
    original: np.ndarray,
    result: np.ndarray,
    params: OpParams,
    *,
    expected_tumour_voxels: float | None,
    inside: np.ndarray | None,
    what: str,
) -> None:
    """Raise :class:`ConstraintViolation` naming the first broken invariant."""
    if result.shape != original.shape or result.dtype != original.dtype:
        raise MaskOpError(f"{what}: result grid {result.shape}/{result.dtype} differs from input "
                          f"{original.shape}/{original.dtype} (a bug)")
    allowed = set(np.unique(original).tolist()) | set(params.tumour_labels)
    new = set(np.unique(result).tolist()) - allowed
    if new:
        raise ConstraintViolation(f"{what}: new label values {sorted(new)} appeared")
    tum = tumour_of(result, params)
    if inside is not None:
        outside = int(np.count_nonzero(tum & ~inside))
        if outside:
            raise ConstraintViolation(f"{what}: {outside} tumour voxels fall outside the head")
    if expected_tumour_voxels is not None:
        got = int(np.count_nonzero(tum))
        tol = max(VOLUME_RTOL * expected_tumour_voxels, VOLUME_ATOL_VOX)
        if abs(got - expected_tumour_voxels) > tol:
            raise ConstraintViolation(
                f"{what}: tumour volume {got} voxels, expected {expected_tumour_voxels:.1f} +- {tol:.1f}"
            )


def check_in_head(
    original: np.ndarray,
    result: np.ndarray,
    params: OpParams,
    *,
    expected_tumour_voxels: float | None,
    what: str,
) -> None:
    """:func:`check_result` for operations that keep the head where it is: every tumour voxel of
    ``result`` must also lie on the original head region (:func:`head_region`)."""
    check_result(original, result, params, expected_tumour_voxels=expected_tumour_voxels,
                 inside=head_region(original, params), what=what)
