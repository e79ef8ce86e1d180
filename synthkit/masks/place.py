"""``place``: a new random tumour of a given size, blobby rather than a perfect sphere.

The blob is the ``N`` head voxels with the lowest score
``|x - center|_mm / radius + roughness * noise(x)``, where ``noise`` is a smooth random field
(cubic-spline interpolated control values in [-1, 1]) and ``N`` the voxel count of a sphere of
``radius_mm``: the volume is exact by construction, the surface is lumpy, and the blob only
takes head-label voxels (never background, never the existing tumour). It must be one
26-connected piece. The whole blob gets one label (``label``, default the first tumour label).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthkit.masks.constraints import ConstraintViolation, MaskOpError, check_in_head, check_input
from synthkit.masks.geometry import components, elastic_field
from synthkit.masks.objects import depth_map, draw_center
from synthkit.masks.params import Operation, OpParams, register
from synthkit.masks.remove import base_for_new_tumour


@dataclass(frozen=True, kw_only=True)
class PlaceParams(OpParams):
    """Blob centre (voxels), equivalent-sphere radius (mm), label, roughness and noise controls
    (flat, ``noise_grid^3`` values in [-1, 1])."""

    center: tuple[float, float, float]
    radius_mm: float
    label: int
    roughness: float
    noise: tuple[float, ...]
    noise_grid: int = 4
    keep_existing: bool = True


@dataclass(frozen=True)
class PlaceOptions:
    radius_mm: float | None = None  # default: drawn in [radius_min, radius_max] x head radius
    radius_min: float = 0.12
    radius_max: float = 0.25
    roughness: float = 0.3
    noise_grid: int = 4
    label: int | None = None
    keep_existing: bool = True

    def __post_init__(self) -> None:
        if self.radius_mm is not None and self.radius_mm <= 0:
            raise ValueError("radius_mm must be > 0")
        if not 0 < self.radius_min <= self.radius_max:
            raise ValueError("need 0 < radius_min <= radius_max")
        if not 0 <= self.roughness < 1:
            raise ValueError("roughness must be in [0, 1)")
        if self.noise_grid < 2:
            raise ValueError("noise_grid must be >= 2")


def target_voxels(params: PlaceParams) -> int:
    """Voxel count of a sphere of ``radius_mm`` on this grid (at least 1)."""
    return max(1, round(4.0 / 3.0 * np.pi * params.radius_mm**3 / float(np.prod(params.spacing))))


def sample(labels: np.ndarray, ctx, rng: np.random.Generator, options: PlaceOptions) -> PlaceParams:
    label = options.label if options.label is not None else ctx.roles.tumour[0]
    if label not in ctx.roles.tumour:
        raise MaskOpError(f"place: label {label} is not a tumour label {list(ctx.roles.tumour)}")
    head = np.isin(labels, ctx.roles.head + ctx.roles.tumour)
    if not head.any():
        raise MaskOpError(f"place: no head/brain voxels (labels {list(ctx.roles.head)})")
    if options.radius_mm is not None:
        radius = float(options.radius_mm)
    else:
        head_r = (3.0 * head.sum() * float(np.prod(ctx.spacing)) / (4.0 * np.pi)) ** (1 / 3)
        radius = float(rng.uniform(options.radius_min, options.radius_max) * head_r)
    n = options.noise_grid
    noise = tuple(float(v) for v in rng.uniform(-1.0, 1.0, n**3))
    free = np.isin(labels, ctx.roles.head) if options.keep_existing else head
    center = draw_center(rng, depth_map(free, ctx.spacing), radius)
    return PlaceParams(**ctx.base_fields(labels), center=center, radius_mm=radius, label=int(label),
                       roughness=float(options.roughness), noise=noise, noise_grid=n,
                       keep_existing=options.keep_existing)


def apply(labels: np.ndarray, params: PlaceParams) -> np.ndarray:
    """Deterministic: (D, H, W) labels -> (D, H, W) labels with one more tumour blob."""
    check_input(labels, params)
    base, kept = base_for_new_tumour(labels, params, params.keep_existing)
    free = np.isin(base, params.head_labels)
    sp = np.asarray(params.spacing)
    c = np.asarray(params.center)
    reach = params.radius_mm * 2.0 / (1.0 - params.roughness) + 2.0 * sp.max()
    lo = np.clip(np.floor(c - reach / sp), 0, None).astype(int)
    hi = np.minimum(np.ceil(c + reach / sp).astype(int) + 1, params.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
    shape = tuple(int(b - a) for a, b in zip(lo, hi))
    grid = np.stack(np.meshgrid(*(np.arange(a, b, dtype=np.float64) for a, b in zip(lo, hi)),
                                indexing="ij"))
    dist = np.sqrt((((grid - c[:, None, None, None]) * sp[:, None, None, None]) ** 2).sum(axis=0))
    g = params.noise_grid
    noise = elastic_field(np.asarray(params.noise, dtype=np.float64).reshape(1, g, g, g), shape)[0]
    score = dist / params.radius_mm + params.roughness * noise
    score[~free[box]] = np.inf
    n = target_voxels(params)
    order = np.argsort(score.ravel(), kind="stable")[:n]
    if not np.isfinite(score.ravel()[order]).all():
        raise ConstraintViolation(f"place: not enough head voxels around {tuple(params.center)} "
                                  f"for a blob of {n} voxels")
    blob = np.zeros(shape, dtype=bool)
    blob.ravel()[order] = True
    if components(blob)[1] != 1:
        raise ConstraintViolation("place: the blob is not in one piece")
    out = base.copy()
    out[box][blob] = params.label
    check_in_head(labels, out, params, expected_tumour_voxels=float(n + kept), what="place")
    return out


OPERATION = register(Operation("place", PlaceParams, PlaceOptions, sample, apply,
                               "add a new blobby tumour of a given size"))
