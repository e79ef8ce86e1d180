"""``move`` (the default operation): the tumour goes to a new plausible place in the head,
with a small random rotation and scaling and, if asked, an elastic warp.

The tumour is every voxel carrying a tumour label, moved as ONE object with all its sub-labels
(BraTS parts keep their nesting). ``per_component=true`` moves each 26-connected component on
its own instead. The old place is healed with the surrounding head label (as ``remove``); the
new centre is drawn among head voxels at least the object's radius (times its scale) away from
the background, and every result must have all tumour voxels on the original head region.
Volume: ``sum(component voxels * scale^3)`` within the nearest-neighbour tolerance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthkit.masks.constraints import MaskOpError, check_in_head, check_input
from synthkit.masks.objects import TransformOptions, draw_placements, extract_objects, paste_object
from synthkit.masks.params import ObjectTransform, Operation, OpParams, register
from synthkit.masks.remove import remove_tumour


@dataclass(frozen=True, kw_only=True)
class MoveParams(OpParams):
    """One :class:`ObjectTransform` per object (one, or one per component in scipy's order)."""

    objects: tuple[ObjectTransform, ...]
    per_component: bool = False


@dataclass(frozen=True)
class MoveOptions(TransformOptions):
    per_component: bool = False


def sample(labels: np.ndarray, ctx, rng: np.random.Generator, options: MoveOptions) -> MoveParams:
    base = ctx.base_fields(labels)
    objs = extract_objects(labels, ctx.roles.tumour, options.per_component)
    if not objs:
        raise MaskOpError(f"no tumour voxels (labels {list(ctx.roles.tumour)}) to move")
    transforms = draw_placements(rng, options, labels, ctx, objs, ctx.spacing)
    return MoveParams(**base, objects=transforms, per_component=options.per_component)


def apply(labels: np.ndarray, params: MoveParams) -> np.ndarray:
    """Deterministic: (D, H, W) labels -> (D, H, W) labels with the tumour moved."""
    check_input(labels, params)
    objs = extract_objects(labels, params.tumour_labels, params.per_component)
    if not objs:
        raise MaskOpError(f"move: no tumour voxels (labels {list(params.tumour_labels)})")
    if len(objs) != len(params.objects):
        raise MaskOpError(f"move: the mask has {len(objs)} tumour objects, the parameters {len(params.objects)}")
    out = remove_tumour(labels, params)
    expected = 0.0
    for (crop, c), t in zip(objs, params.objects):
        out = paste_object(out, crop, c, params.spacing, params.spacing, t)
        expected += np.count_nonzero(crop) * t.scale**3
    check_in_head(labels, out, params, expected_tumour_voxels=expected, what="move")
    return out


OPERATION = register(Operation("move", MoveParams, MoveOptions, sample, apply,
                               "move the tumour to a new place, rotated, scaled (and warped)"))
