"""``remove``: a healthy counterfactual. Tumour voxels become the surrounding head/brain label.

Each removed voxel takes the label of the nearest head-label voxel (Euclidean distance in mm,
``scipy.ndimage.distance_transform_edt``), so with several head labels (e.g. grey/white matter)
the hole is filled by its neighbours, and never by the background. No random parameters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from synthkit.masks.constraints import MaskOpError, check_in_head, check_input, tumour_of
from synthkit.masks.params import Operation, OpParams, register


@dataclass(frozen=True, kw_only=True)
class RemoveParams(OpParams):
    """Nothing to draw: the tumour (all ``tumour_labels``) is removed."""


@dataclass(frozen=True)
class RemoveOptions:
    """``remove`` takes no options."""


def fill_with_head(labels: np.ndarray, holes: np.ndarray, head_labels: tuple[int, ...],
                   spacing: tuple[float, float, float]) -> np.ndarray:
    """Copy of ``labels`` where voxels in ``holes`` take the label of the nearest head voxel."""
    out = labels.copy()
    if not holes.any():
        return out
    source = np.isin(labels, head_labels) & ~holes
    if not source.any():
        raise MaskOpError(f"the mask has no head/brain voxels (labels {list(head_labels)}) to fill "
                          "the tumour with; pass --head-label")
    # Work in the box around the holes, grown until it provably holds each hole's nearest head
    # voxel (every voxel outside the box is further than ``pad`` voxels from every hole).
    idx = np.argwhere(holes)
    pad = 4
    while True:
        lo = np.maximum(idx.min(axis=0) - pad, 0)
        hi = np.minimum(idx.max(axis=0) + 1 + pad, labels.shape)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        whole = bool(np.all(lo == 0) and np.all(hi == labels.shape))
        if source[box].any() or whole:
            dist, nearest = ndimage.distance_transform_edt(
                ~source[box], sampling=spacing, return_indices=True)
            if whole or dist[holes[box]].max() <= pad * min(spacing):
                break
        pad *= 2
    sub = out[box]
    h = holes[box]
    sub[h] = labels[box][tuple(n[h] for n in nearest)]
    return out


def remove_tumour(labels: np.ndarray, params: OpParams) -> np.ndarray:
    """Copy of (D, H, W) ``labels`` with every tumour voxel healed by :func:`fill_with_head`."""
    return fill_with_head(labels, tumour_of(labels, params), params.head_labels, params.spacing)


def base_for_new_tumour(labels: np.ndarray, params: OpParams, keep_existing: bool
                        ) -> tuple[np.ndarray, int]:
    """Where an operation that adds a tumour starts from: (``labels`` as they are, their tumour
    voxel count) with ``keep_existing``, else (``labels`` with the tumour removed, 0)."""
    if keep_existing:
        return labels, int(np.count_nonzero(tumour_of(labels, params)))
    return remove_tumour(labels, params), 0


def sample(labels: np.ndarray, ctx, rng: np.random.Generator, options: RemoveOptions) -> RemoveParams:
    if not np.isin(labels, ctx.roles.tumour).any():
        raise MaskOpError(f"no tumour voxels (labels {list(ctx.roles.tumour)}) to remove")
    return RemoveParams(**ctx.base_fields(labels))


def apply(labels: np.ndarray, params: RemoveParams) -> np.ndarray:
    """Deterministic: (D, H, W) labels -> (D, H, W) labels with no tumour label left."""
    check_input(labels, params)
    out = remove_tumour(labels, params)
    check_in_head(labels, out, params, expected_tumour_voxels=0, what="remove")
    if np.isin(out, params.tumour_labels).any():  # exact: no tolerance for a removal
        raise MaskOpError("remove: tumour voxels left after removal (a bug)")
    return out


OPERATION = register(Operation("remove", RemoveParams, RemoveOptions, sample, apply,
                               "tumour voxels become the surrounding head/brain label"))
