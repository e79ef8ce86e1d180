"""``deform``: the whole mask (head and tumour together) under a small affine + elastic warp.

Rotation and isotropic scaling act in mm about the head's centre, then a translation (voxels)
and a smooth elastic displacement (cubic-spline interpolated control grid, voxels), all
resampled nearest-neighbour on the original grid. The tumour moves with the head, so "inside
the head" holds by construction; the checks are: labels kept, and the tumour and head volumes
each equal ``scale^3`` times the original within the tolerance (which also rejects warps that
push the head out of the field of view).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from synthkit.masks.constraints import (
    VOLUME_ATOL_VOX,
    VOLUME_RTOL,
    ConstraintViolation,
    MaskOpError,
    check_input,
    check_result,
    tumour_of,
)
from synthkit.masks.geometry import centroid, elastic_field, rotation_matrix
from synthkit.masks.params import Operation, OpParams, register


@dataclass(frozen=True, kw_only=True)
class DeformParams(OpParams):
    center: tuple[float, float, float]  # rotation/scaling centre, voxels
    rotation_deg: tuple[float, float, float]
    scale: float
    translation: tuple[float, float, float]  # voxels
    elastic: tuple[float, ...] | None = None  # flat 3 * elastic_grid^3, voxels
    elastic_grid: int = 5


@dataclass(frozen=True)
class DeformOptions:
    max_rotation_deg: float = 5.0
    scale_min: float = 0.95
    scale_max: float = 1.05
    max_translation: float = 2.0  # voxels
    elastic: float = 1.5  # max control displacement, voxels; 0 = affine only
    elastic_grid: int = 5

    def __post_init__(self) -> None:
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError("need 0 < scale_min <= scale_max")
        if min(self.max_rotation_deg, self.max_translation, self.elastic) < 0:
            raise ValueError("ranges must be >= 0")
        if self.elastic_grid < 2:
            raise ValueError("elastic_grid must be >= 2")


def sample(labels: np.ndarray, ctx, rng: np.random.Generator, options: DeformOptions) -> DeformParams:
    fg = labels != 0
    if not fg.any():
        raise MaskOpError("deform: the mask is empty (background only)")
    rot = tuple(float(a) for a in rng.uniform(-options.max_rotation_deg, options.max_rotation_deg, 3))
    scale = float(rng.uniform(options.scale_min, options.scale_max))
    trans = tuple(float(a) for a in rng.uniform(-options.max_translation, options.max_translation, 3))
    elastic = None
    if options.elastic > 0:
        n = options.elastic_grid
        elastic = tuple(float(v) for v in rng.uniform(-options.elastic, options.elastic, 3 * n**3))
    return DeformParams(**ctx.base_fields(labels), center=tuple(float(v) for v in centroid(fg)),
                        rotation_deg=rot, scale=scale, translation=trans, elastic=elastic,
                        elastic_grid=options.elastic_grid)


def apply(labels: np.ndarray, params: DeformParams) -> np.ndarray:
    """Deterministic: (D, H, W) labels -> (D, H, W) labels, warped, nearest-neighbour."""
    check_input(labels, params)
    sp = np.asarray(params.spacing)[:, None]
    c = np.asarray(params.center)[:, None]
    a_inv = np.linalg.inv(rotation_matrix(params.rotation_deg) * params.scale)
    grid = np.indices(params.shape, dtype=np.float64)
    if params.elastic is not None:
        g = params.elastic_grid
        grid += elastic_field(np.asarray(params.elastic).reshape(3, g, g, g), params.shape)
    pts = grid.reshape(3, -1) - np.asarray(params.translation)[:, None] - c
    src = c + (a_inv @ (pts * sp)) / sp
    out = ndimage.map_coordinates(labels, src, order=0, mode="grid-constant", cval=0,
                                  prefilter=False).reshape(params.shape).astype(labels.dtype)
    expected = np.count_nonzero(tumour_of(labels, params)) * params.scale**3
    check_result(labels, out, params, expected_tumour_voxels=expected, inside=None, what="deform")
    head_exp = np.count_nonzero(labels) * params.scale**3
    head_got = np.count_nonzero(out)
    if abs(head_got - head_exp) > max(VOLUME_RTOL * head_exp, VOLUME_ATOL_VOX):
        raise ConstraintViolation(f"deform: head volume {head_got} voxels, expected {head_exp:.0f}")
    return out


OPERATION = register(Operation("deform", DeformParams, DeformOptions, sample, apply,
                               "warp the whole mask (affine + elastic)"))
