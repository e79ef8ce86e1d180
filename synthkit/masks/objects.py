"""Tumour objects: extracting them from a mask, drawing a plausible placement, pasting them.

Shared by ``move`` and ``transplant``. An *object* is a crop of the mask holding the tumour's
labels (all tumour sub-labels, so BraTS parts move together) and 0 elsewhere. With
``per_component=True`` each 26-connected component of the tumour is its own object.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from synthkit.masks.context import SampleContext
from synthkit.masks.geometry import bbox, components, transform_object
from synthkit.masks.params import ObjectTransform


@dataclass(frozen=True)
class TransformOptions:
    """Ranges the random placement is drawn from (shared by move and transplant)."""

    max_rotation_deg: float = 10.0
    scale_min: float = 0.9
    scale_max: float = 1.1
    elastic: float = 0.0  # max control displacement in voxels; 0 = no elastic warp
    elastic_grid: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.scale_min <= self.scale_max:
            raise ValueError(f"need 0 < scale_min <= scale_max, got {self.scale_min}, {self.scale_max}")
        if self.max_rotation_deg < 0 or self.elastic < 0:
            raise ValueError("max_rotation_deg and elastic must be >= 0")
        if self.elastic_grid < 2:
            raise ValueError("elastic_grid must be >= 2")


def extract_objects(labels: np.ndarray, tumour_labels: tuple[int, ...], per_component: bool
                    ) -> list[tuple[np.ndarray, np.ndarray]]:
    """List of (crop (d, h, w) with the object's labels, centre (3,) in crop voxels)."""
    tum = np.isin(labels, tumour_labels)
    if not tum.any():
        return []
    if per_component:
        lab, n = components(tum)
        parts = [lab == i for i in range(1, n + 1)]
    else:
        parts = [tum]
    out = []
    for part in parts:
        box = bbox(part)
        crop = np.where(part[box], labels[box], 0).astype(labels.dtype)
        out.append((crop, np.argwhere(crop).mean(axis=0)))
    return out


def object_radius_mm(crop: np.ndarray, center: np.ndarray, spacing: tuple[float, float, float]) -> float:
    """Largest distance (mm) from ``center`` to a voxel of the object, plus half a voxel."""
    d = (np.argwhere(crop) - center) * np.asarray(spacing)
    return float(np.sqrt((d**2).sum(axis=1)).max()) + 0.5 * max(spacing)


def depth_map(region: np.ndarray, spacing: tuple[float, float, float], max_size: int = 64) -> np.ndarray:
    """Distance (mm) from each voxel of ``region`` to the nearest voxel outside it (or the grid edge).

    Grids larger than ``max_size`` along some axis are measured on every ``f``-th voxel and the
    result, upsampled, is lowered by ``(f - 1)`` voxels to stay conservative: the map only steers
    where a centre is drawn (the constraint checks are exact), and a full-resolution distance
    transform would dominate the run time on 128^3+ grids.
    """
    f = max(1, -(-max(region.shape) // max_size))
    sub = region[::f, ::f, ::f]
    sp = tuple(float(s) * f for s in spacing)
    d = ndimage.distance_transform_edt(np.pad(sub, 1, constant_values=False), sampling=sp)[1:-1, 1:-1, 1:-1]
    if f == 1:
        return d
    up = np.repeat(np.repeat(np.repeat(d, f, 0), f, 1), f, 2)[: region.shape[0], : region.shape[1], : region.shape[2]]
    return np.where(region, np.maximum(up - (f - 1) * max(spacing), 0.0), 0.0)


def draw_center(rng: np.random.Generator, depth: np.ndarray, radius_mm: float) -> tuple[float, float, float]:
    """A voxel deep enough in the head for an object of ``radius_mm`` (uniform among them; if
    none is, among the deepest 10%), plus a uniform sub-voxel offset in [-0.5, 0.5)^3.

    The random phase makes nearest-neighbour rotation/scaling unbiased in volume (a fixed phase
    can land every sample on a rounding tie and drop or double whole rows of a small object)."""
    cand = np.flatnonzero(depth.ravel() >= radius_mm)
    if cand.size == 0:
        cand = np.flatnonzero(depth.ravel() >= 0.9 * depth.max())
    flat = int(cand[rng.integers(cand.size)])
    voxel = np.asarray(np.unravel_index(flat, depth.shape), dtype=np.float64)
    return tuple(float(v) for v in voxel + rng.uniform(-0.5, 0.5, 3))  # type: ignore[return-value]


def draw_transform(rng: np.random.Generator, opts: TransformOptions, depth: np.ndarray,
                   radius_mm: float) -> ObjectTransform:
    """Draw rotation, scale, elastic controls, then a centre where the scaled object fits."""
    rot = tuple(float(a) for a in rng.uniform(-opts.max_rotation_deg, opts.max_rotation_deg, 3))
    scale = float(rng.uniform(opts.scale_min, opts.scale_max))
    elastic = None
    if opts.elastic > 0:
        n = opts.elastic_grid
        elastic = tuple(float(v) for v in rng.uniform(-opts.elastic, opts.elastic, 3 * n**3))
    center = draw_center(rng, depth, radius_mm * scale)
    return ObjectTransform(center=center, rotation_deg=rot, scale=scale, elastic=elastic,
                           elastic_grid=opts.elastic_grid)


def draw_placements(rng: np.random.Generator, opts: TransformOptions, labels: np.ndarray,
                    ctx: SampleContext, objects: list[tuple[np.ndarray, np.ndarray]],
                    object_spacing: tuple[float, float, float]) -> tuple[ObjectTransform, ...]:
    """One :func:`draw_transform` per object of :func:`extract_objects` (voxel size
    ``object_spacing``), in order, each centred deep enough in the head region (head and
    tumour labels) of the (D, H, W) ``labels``."""
    depth = depth_map(np.isin(labels, ctx.roles.head + ctx.roles.tumour), ctx.spacing)
    return tuple(draw_transform(rng, opts, depth, object_radius_mm(crop, c, object_spacing))
                 for crop, c in objects)


def paste_object(base: np.ndarray, crop: np.ndarray, center: np.ndarray,
                 src_spacing: tuple[float, float, float], spacing: tuple[float, float, float],
                 t: ObjectTransform) -> np.ndarray:
    """(D, H, W) ``base`` (voxel size ``spacing``) with the object (``crop``, voxel size
    ``src_spacing``, about ``center``) transformed by ``t`` and its non-zero voxels written over."""
    moved = transform_object(crop, center, src_spacing, base.shape, spacing, t.center,
                             t.rotation_deg, t.scale, t.elastic_array())
    return np.where(moved != 0, moved, base)
