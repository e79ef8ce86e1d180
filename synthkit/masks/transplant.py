"""``transplant``: a tumour from another case (the donor), placed into this mask.

The donor's whole tumour (all tumour labels, one object) is cropped and stored in the
parameters as run-length data, so replay needs only this mask. It is placed like ``move``
places an object (new centre deep enough in the head, small rotation and scaling, optional
warp) and rescaled in mm when the donor's voxels differ in size. The recipient's own tumour
is removed first unless ``keep_existing=true``.
Volume: ``donor voxels * scale^3 * donor voxel volume / voxel volume`` (+ the kept tumour).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthkit.errors import SynthkitError
from synthkit.masks.constraints import (
    ConstraintViolation,
    MaskOpError,
    check_input,
    check_result,
    head_region,
    tumour_of,
)
from synthkit.masks.geometry import rle_decode, rle_encode
from synthkit.masks.objects import (
    TransformOptions,
    depth_map,
    draw_transform,
    extract_objects,
    object_radius_mm,
    paste,
    place_object,
)
from synthkit.masks.params import ObjectTransform, Operation, OpParams, register
from synthkit.masks.remove import fill_with_head


@dataclass(frozen=True, kw_only=True)
class TransplantParams(OpParams):
    """``donor_case``: the donor's case id in the cohort (no other identifier);
    ``donor_shape``/``donor_rle``: the donor tumour crop; ``donor_spacing``: its voxel size."""

    donor_case: str
    donor_shape: tuple[int, int, int]
    donor_rle: tuple[int, ...]
    donor_spacing: tuple[float, float, float]
    transform: ObjectTransform
    keep_existing: bool = False


@dataclass(frozen=True)
class TransplantOptions(TransformOptions):
    donor: str | None = None  # a case id; default: drawn among the other cases
    keep_existing: bool = False


def sample(labels: np.ndarray, ctx, rng: np.random.Generator, options: TransplantOptions
           ) -> TransplantParams:
    if ctx.donors is None:
        raise MaskOpError("transplant needs other cases to take a tumour from (a donor pool)")
    ids = sorted(ctx.donors.case_ids())
    if options.donor is not None:
        if options.donor not in ids:
            raise MaskOpError(f"transplant: donor case {options.donor!r} is not in the cohort")
        ids = [options.donor]
    else:
        ids = [i for i in ids if i != ctx.case_id] or ids
    if not ids:
        raise MaskOpError("transplant: the cohort has no donor cases")
    donor = ids[int(rng.integers(len(ids)))]
    try:
        dlabels, dspacing = ctx.donors.load(donor)
    except SynthkitError as e:
        raise ConstraintViolation(f"transplant: donor {donor!r} unusable ({e})") from None
    objs = extract_objects(np.asarray(dlabels), ctx.roles.tumour, per_component=False)
    if not objs:
        raise ConstraintViolation(f"transplant: donor {donor!r} has no tumour")
    crop, c = objs[0]
    region = np.isin(labels, ctx.roles.head + ctx.roles.tumour)
    t = draw_transform(rng, options, depth_map(region, ctx.spacing), object_radius_mm(crop, c, dspacing))
    return TransplantParams(**ctx.base_fields(labels), donor_case=donor,
                            donor_shape=tuple(int(s) for s in crop.shape), donor_rle=rle_encode(crop),
                            donor_spacing=tuple(float(s) for s in dspacing), transform=t,
                            keep_existing=options.keep_existing)


def apply(labels: np.ndarray, params: TransplantParams) -> np.ndarray:
    """Deterministic: (D, H, W) labels -> (D, H, W) labels carrying the donor's tumour."""
    check_input(labels, params)
    try:
        crop = rle_decode(params.donor_rle, params.donor_shape).astype(labels.dtype)
    except ValueError as e:
        raise MaskOpError(f"transplant: bad donor data ({e})") from None
    if not crop.any():
        raise MaskOpError("transplant: the donor object is empty")
    tum = tumour_of(labels, params)
    base = labels if params.keep_existing else fill_with_head(labels, tum, params.head_labels, params.spacing)
    c = np.argwhere(crop).mean(axis=0)
    moved = place_object(crop, c, params.donor_spacing, params.shape, params.spacing, params.transform)
    out = paste(base, moved)
    ratio = float(np.prod(params.donor_spacing) / np.prod(params.spacing))
    expected = np.count_nonzero(crop) * params.transform.scale**3 * ratio
    if params.keep_existing:
        expected += np.count_nonzero(tum)
    check_result(labels, out, params, expected_tumour_voxels=expected,
                 inside=head_region(labels, params), what="transplant")
    return out


OPERATION = register(Operation("transplant", TransplantParams, TransplantOptions, sample, apply,
                               "put another case's tumour into this mask"))
