"""Grid geometry shared by the mask operations: spacing, rotations, smooth elastic fields,
connected components, run-length encoding and nearest-neighbour resampling of label maps.

Everything here is deterministic; the random parts live in each operation's ``sample``.
Label maps are always resampled with nearest-neighbour (``order=0``), so no new label value
can ever appear.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: 26-connectivity in 3D: voxels touching by a face, an edge or a corner are one component.
CONNECTIVITY = ndimage.generate_binary_structure(3, 3)


def spacing_from_affine(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along i, j, k: the norms of the affine's first three columns."""
    a = np.asarray(affine, dtype=np.float64)
    sp = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    return tuple(float(s) if s > 0 else 1.0 for s in sp)  # type: ignore[return-value]


def rotation_matrix(angles_deg: tuple[float, float, float] | np.ndarray) -> np.ndarray:
    """(3, 3) rotation ``Rz @ Ry @ Rx`` for angles (about axis 0, 1, 2) in degrees."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _spline_weights(n_ctrl: int, n_out: int) -> np.ndarray:
    """(n_out, n_ctrl) matrix that cubic-spline interpolates ``n_ctrl`` control values spread
    evenly over ``n_out`` samples (first and last sample sit on the end control points)."""
    pos = np.linspace(0.0, n_ctrl - 1, n_out)
    w = np.empty((n_out, n_ctrl))
    for j in range(n_ctrl):
        e = np.zeros(n_ctrl)
        e[j] = 1.0
        w[:, j] = ndimage.map_coordinates(e, pos[None], order=3, mode="nearest")
    return w


def elastic_field(ctrl: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Smooth displacement field (3, D, H, W) in voxels from control displacements (3, n, n, n).

    Separable cubic-spline interpolation of a coarse control grid, as in torchio's
    ``RandomElasticDeformation`` (there B-splines via SimpleITK; here plain numpy).
    """
    ctrl = np.asarray(ctrl, dtype=np.float64)
    wd, wh, ww = (_spline_weights(ctrl.shape[i + 1], shape[i]) for i in range(3))
    return np.einsum("di,hj,wk,cijk->cdhw", wd, wh, ww, ctrl, optimize=True)


def components(obj: np.ndarray) -> tuple[np.ndarray, int]:
    """Label the 26-connected components of ``obj != 0``; order is scipy's (raster order of
    each component's first voxel), hence deterministic. Returns (labels (D, H, W), count)."""
    lab, n = ndimage.label(obj != 0, structure=CONNECTIVITY)
    return lab, int(n)


def centroid(mask: np.ndarray) -> np.ndarray:
    """(3,) mean voxel coordinate of the non-zero voxels of ``mask``."""
    idx = np.argwhere(mask)
    return idx.mean(axis=0) if len(idx) else np.full(3, np.nan)


def bbox(mask: np.ndarray) -> tuple[slice, slice, slice]:
    """Tight bounding box of the non-zero voxels (``mask`` must have some)."""
    idx = np.argwhere(mask)
    lo, hi = idx.min(axis=0), idx.max(axis=0) + 1
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def rle_encode(a: np.ndarray) -> tuple[int, ...]:
    """Run-length encode a C-order integer array as flat ``(value, count, value, count, ...)``."""
    flat = np.asarray(a).ravel()
    if flat.size == 0:
        return ()
    change = np.flatnonzero(np.diff(flat)) + 1
    starts = np.concatenate([[0], change])
    counts = np.diff(np.concatenate([starts, [flat.size]]))
    out = np.empty(2 * len(starts), dtype=np.int64)
    out[0::2], out[1::2] = flat[starts], counts
    return tuple(int(x) for x in out)


def rle_decode(runs: tuple[int, ...] | list[int], shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`rle_encode`; raises ``ValueError`` if the runs do not fill ``shape``."""
    r = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    if r[:, 1].sum() != int(np.prod(shape)):
        raise ValueError(f"run-length data has {r[:, 1].sum()} voxels, shape {shape} needs {np.prod(shape)}")
    return np.repeat(r[:, 0], r[:, 1]).reshape(shape)


def transform_object(
    obj: np.ndarray,
    src_center: np.ndarray,
    src_spacing: tuple[float, float, float],
    out_shape: tuple[int, int, int],
    out_spacing: tuple[float, float, float],
    dst_center: tuple[float, float, float],
    rotation_deg: tuple[float, float, float],
    scale: float,
    elastic: np.ndarray | None = None,
) -> np.ndarray:
    """Place a label object into a grid, rotated and scaled about its centre, optionally warped.

    ``obj`` (d, h, w) holds the object's labels (0 elsewhere) on a grid with ``src_spacing``;
    ``src_center`` is the point (in its voxels) that lands on ``dst_center`` (voxels of the
    output grid). Rotation and scaling act in mm, so anisotropic grids are handled. ``elastic``
    (3, n, n, n) are control displacements in output voxels, spread over the output box the
    object covers. Returns an (out_shape) label map, nearest-neighbour resampled, 0 outside.
    """
    src_sp, out_sp = np.asarray(src_spacing, float), np.asarray(out_spacing, float)
    dst = np.asarray(dst_center, float)
    a = rotation_matrix(rotation_deg) * float(scale)  # source mm offset -> output mm offset
    a_inv = np.linalg.inv(a)
    # Output box: the source box corners mapped through the transform, plus the warp margin.
    nz = np.argwhere(obj)
    lo_s, hi_s = nz.min(axis=0) - 0.5, nz.max(axis=0) + 0.5
    corners = np.array([[x, y, z] for x in (lo_s[0], hi_s[0]) for y in (lo_s[1], hi_s[1])
                        for z in (lo_s[2], hi_s[2])])
    mapped = dst + ((corners - src_center) * src_sp) @ a.T / out_sp
    margin = 1.0 + (float(np.abs(elastic).max()) if elastic is not None else 0.0)
    lo = np.clip(np.floor(mapped.min(axis=0) - margin), 0, None).astype(int)
    hi = np.minimum(np.ceil(mapped.max(axis=0) + margin).astype(int) + 1, out_shape)
    out = np.zeros(out_shape, dtype=obj.dtype)
    if np.any(hi <= lo):
        return out
    box = tuple(int(h - l) for l, h in zip(lo, hi))
    grid = np.stack(np.meshgrid(*(np.arange(l, h, dtype=np.float64) for l, h in zip(lo, hi)),
                                indexing="ij"))  # (3, *box) output voxel coords
    if elastic is not None:
        grid = grid + elastic_field(elastic, box)
    off_mm = (grid.reshape(3, -1) - dst[:, None]) * out_sp[:, None]
    src = src_center[:, None] + (a_inv @ off_mm) / src_sp[:, None]
    vals = ndimage.map_coordinates(obj, src, order=0, mode="grid-constant", cval=0, prefilter=False)
    out[tuple(slice(int(l), int(h)) for l, h in zip(lo, hi))] = vals.reshape(box)
    return out
