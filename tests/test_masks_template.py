"""``template``: the patient's tumour placed into a head from a reference pool, not the patient's."""

from __future__ import annotations

import json

import numpy as np
import pytest
from phantoms import phantom

from synthkit.errors import UsageError
from synthkit.io import write_nifti
from synthkit.io.demo_cohort import demo_head
from synthkit.masks import (
    MaskOpError,
    SampleContext,
    apply_chain,
    chain_from_json,
    chain_to_json,
    parse_op_specs,
    perturb,
    resolve_roles,
)
from synthkit.masks.ops import operations
from synthkit.masks.template import DEMO_POOL_SEED, resample_head

NAMES = {"background": 0, "head": 1, "tumour": 2}


def _patient(seed: int = 3, size: int = 24):
    _, msk = phantom(size, seed=seed)
    roles = resolve_roles(None, None, NAMES, [0, 1, 2])
    return msk.data[0], msk.affine, SampleContext(roles, spacing=(1.5,) * 3, affine=msk.affine)


def _dice(a, b):
    return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


def test_tumour_moves_into_a_demo_head_that_is_not_the_patients():
    lab, aff, ctx = _patient()
    out, chain = perturb(lab, "template", ctx, np.random.default_rng(0))
    p = chain[0]
    assert "template" in operations() and out.shape == lab.shape and out.dtype == lab.dtype
    assert set(np.unique(out)) <= {0, 1, 2}
    tum, head = out == 2, out > 0
    assert tum.any() and abs(tum.sum() - (lab == 2).sum()) <= max(0.35 * (lab == 2).sum(), 3)  # scale 0.9-1.1
    assert p.head_source.startswith("demo:") and 0 <= int(p.head_source.split(":")[1]) < 16
    # the head is the pool head on the patient's grid (same centre, same volume), not the patient's
    pool_head, pool_aff = demo_head(int(p.head_source.split(":")[1]), 32, DEMO_POOL_SEED)
    np.testing.assert_array_equal(head, resample_head(pool_head, pool_aff, lab > 0, aff, True))
    assert _dice(head, lab > 0) < 0.9
    assert abs(head.sum() - (lab > 0).sum()) < 0.15 * (lab > 0).sum()
    # deterministic twin: a seed gives the same mask, the JSON record replays it bit for bit
    again, _ = perturb(lab, "template", ctx, np.random.default_rng(0))
    np.testing.assert_array_equal(again, out)
    record = json.loads(json.dumps(chain_to_json(chain)))
    np.testing.assert_array_equal(apply_chain(lab, chain_from_json(record)), out)


def test_heads_from_a_folder_are_resampled_through_world_coordinates(tmp_path):
    lab, aff, ctx = _patient()
    heads = []
    for i, seed in enumerate((10, 11)):  # two other "people", on other grids
        _, m = phantom(20 + 4 * i, seed=seed)
        a = m.affine.copy()
        a[:3, :3] *= 1.2
        write_nifti(tmp_path / "heads" / f"donor_{seed}.nii.gz", m.data, a, is_label=True)
        heads.append(resample_head(m.data[0] > 0, a, lab > 0, aff, True))
    out, chain = perturb(lab, "template:heads=" + str(tmp_path / "heads"), ctx, np.random.default_rng(4))
    src = chain[0].head_source
    assert src.startswith("dir:") and "donor" not in src and len(src.split(":")[2]) == 12
    np.testing.assert_array_equal(out > 0, heads[int(src.split(":")[1])])
    picked = {perturb(lab, f"template:heads={tmp_path / 'heads'}", ctx, np.random.default_rng(s))[1][0].head_source
              for s in range(8)}
    assert len({p.split(":")[1] for p in picked}) == 2  # both heads of the pool are used


def test_the_new_head_follows_the_world_not_the_voxel_order():
    lab, aff, ctx = _patient(seed=5)
    flipped = lab[::-1].copy()  # the same head stored left-to-right
    faff = aff.copy()
    faff[:3, 0] *= -1
    faff[:3, 3] = aff[:3, :3] @ np.array([lab.shape[0] - 1, 0, 0]) + aff[:3, 3]
    fctx = SampleContext(ctx.roles, spacing=ctx.spacing, affine=faff)
    out, _ = perturb(lab, "template:max_rotation_deg=0,scale_min=1,scale_max=1", ctx, np.random.default_rng(2))
    fout, _ = perturb(flipped, "template:max_rotation_deg=0,scale_min=1,scale_max=1", fctx, np.random.default_rng(2))
    np.testing.assert_array_equal(fout[::-1] > 0, out > 0)


def test_relocate_and_keep_place():
    lab, _, ctx = _patient(seed=7)
    kept, _ = perturb(lab, "template:max_rotation_deg=0,scale_min=1,scale_max=1", ctx, np.random.default_rng(1))
    c0 = np.argwhere(lab == 2).mean(axis=0)
    assert np.abs(np.argwhere(kept == 2).mean(axis=0) - c0).max() < 1.0  # fits: stays at its place
    moved = [perturb(lab, "template:relocate=true", ctx, np.random.default_rng(s))[0] for s in range(4)]
    assert max(np.abs(np.argwhere(m == 2).mean(axis=0) - c0).max() for m in moved) > 1.0
    assert all(((m == 2) <= (m > 0)).all() for m in moved)


def test_template_errors_are_clear(tmp_path):
    lab, _, ctx = _patient()
    with pytest.raises(MaskOpError, match="not found"):
        perturb(lab, f"template:heads={tmp_path / 'nope'}", ctx, np.random.default_rng(0))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MaskOpError, match="no NIfTI head masks"):
        perturb(lab, f"template:heads={tmp_path / 'empty'}", ctx, np.random.default_rng(0))
    with pytest.raises(MaskOpError, match="no tumour"):
        perturb(np.where(lab == 2, 1, lab).astype(lab.dtype), "template", ctx, np.random.default_rng(0))
    with pytest.raises(UsageError):
        parse_op_specs("template:pool=0")
