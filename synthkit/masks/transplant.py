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
from synthkit.masks.constraints import ConstraintViolation, MaskOpError, check_in_head, check_input
from synthkit.masks.geometry import rle_decode, rle_encode
from synthkit.masks.objects import TransformOptions, draw_placements, extract_objects, paste_object
from synthkit.masks.params import ObjectTransform, Operation, OpParams, register
from synthkit.masks.remove import base_for_new_tumour


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
    crop = objs[0][0]
    (t,) = draw_placements(rng, options, labels, ctx, objs, dspacing)
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
    base, kept = base_for_new_tumour(labels, params, params.keep_existing)
    c = np.argwhere(crop).mean(axis=0)
    out = paste_object(base, crop, c, params.donor_spacing, params.spacing, params.transform)
    ratio = float(np.prod(params.donor_spacing) / np.prod(params.spacing))
    expected = np.count_nonzero(crop) * params.transform.scale**3 * ratio + kept
    check_in_head(labels, out, params, expected_tumour_voxels=expected, what="transplant")
    return out


OPERATION = register(Operation("transplant", TransplantParams, TransplantOptions, sample, apply,
                               "put another case's tumour into this mask"))
