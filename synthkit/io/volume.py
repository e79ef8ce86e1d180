"""The in-memory volume: voxels plus the affine that places them in the world.

Conventions (shared by every synthkit module):

* ``data`` is ``(C, D, H, W)``: channels first, then the three voxel axes ``i, j, k`` in the
  order the file stores them (for NIfTI, nibabel's array axes; for DICOM, see
  :mod:`synthkit.io.dicom`). Images are float32; label maps are integer with ``C == 1``.
* ``affine`` is a ``(4, 4)`` float64 matrix mapping voxel ``(i, j, k, 1)`` to RAS+ world
  millimetres (the NIfTI convention: +x towards the patient's Right, +y Anterior, +z Superior;
  DICOM's LPS+ differs by the sign of x and y).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Default tolerances for "same world grid": translation in mm, direction cosines (unitless,
#: about 1e-4 rad), voxel size relative.
GRID_ATOL_MM = 1e-3
GRID_ATOL_ROT = 1e-4
GRID_RTOL_ZOOM = 1e-4


@dataclass(frozen=True)
class Volume:
    """A ``(C, D, H, W)`` array and its ``(4, 4)`` voxel-to-RAS affine (mm)."""

    data: np.ndarray
    affine: np.ndarray

    def __post_init__(self) -> None:
        if self.data.ndim != 4:
            raise ValueError(f"Volume.data must be (C, D, H, W), got shape {self.data.shape}")
        aff = np.asarray(self.affine, dtype=np.float64)
        if aff.shape != (4, 4):
            raise ValueError(f"Volume.affine must be (4, 4), got {aff.shape}")
        object.__setattr__(self, "affine", aff)

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along i, j, k (norms of the affine's first three columns)."""
        return spacing_from_affine(self.affine)

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(D, H, W)``."""
        d, h, w = self.data.shape[1:]
        return int(d), int(h), int(w)

    @property
    def n_channels(self) -> int:
        return int(self.data.shape[0])


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm) along each voxel axis of a ``(4, 4)`` affine."""
    z = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    return float(z[0]), float(z[1]), float(z[2])


def grid_mismatch(
    shape_a: tuple[int, ...],
    affine_a: np.ndarray,
    shape_b: tuple[int, ...],
    affine_b: np.ndarray,
    *,
    atol_mm: float = GRID_ATOL_MM,
    atol_rot: float = GRID_ATOL_ROT,
    rtol_zoom: float = GRID_RTOL_ZOOM,
) -> str | None:
    """Why two voxel grids differ, as a short phrase, or ``None`` when they are the same.

    ``shape_*`` are spatial shapes ``(D, H, W)``; ``affine_*`` voxel-to-world ``(4, 4)``.
    The origin must agree within ``atol_mm`` millimetres, each axis direction within
    ``atol_rot`` (difference of unit vectors, i.e. about radians), and each voxel size within
    ``rtol_zoom`` relative.
    """
    if tuple(shape_a) != tuple(shape_b):
        return f"shape {tuple(shape_a)} vs {tuple(shape_b)}"
    a = np.asarray(affine_a, dtype=np.float64)
    b = np.asarray(affine_b, dtype=np.float64)
    dt = float(np.max(np.abs(a[:3, 3] - b[:3, 3])))
    if dt > atol_mm:
        return f"origin differs by {dt:.3g} mm"
    za, zb = np.linalg.norm(a[:3, :3], axis=0), np.linalg.norm(b[:3, :3], axis=0)
    if np.any(za <= 0) or np.any(zb <= 0):
        return "degenerate affine (zero voxel size)"
    dz = float(np.max(np.abs(za - zb) / np.maximum(za, zb)))
    if dz > rtol_zoom:
        return (
            f"spacing {tuple(round(float(x), 4) for x in za)} vs "
            f"{tuple(round(float(x), 4) for x in zb)}"
        )
    dr = float(np.max(np.abs(a[:3, :3] / za - b[:3, :3] / zb)))
    if dr > atol_rot:
        return f"orientation differs ({dr:.3g})"
    return None
