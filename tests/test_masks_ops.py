"""Invariants of each mask operation on tiny synthetic label maps (numpy only, no files)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthkit.masks import (
    ConstraintViolation,
    InMemoryDonors,
    MaskOpError,
    SampleContext,
    apply,
    apply_chain,
    chain_from_json,
    chain_to_json,
    perturb,
    resolve_roles,
)
from synthkit.masks.constraints import VOLUME_ATOL_VOX, VOLUME_RTOL
from synthkit.masks.move import MoveParams
from synthkit.masks.params import ObjectTransform
from synthkit.masks.place import target_voxels

NAMES = {"background": 0, "head": 1, "tumour": 2}
OPS = ["move", "move:elastic=1.5", "move:per_component=true", "transplant", "remove", "place", "deform"]


def ball(shape, center, radius):
    g = np.indices(shape, dtype=float)
    return ((g - np.asarray(center, float)[:, None, None, None]) ** 2).sum(0) < radius**2


def head_mask(n=24, tumour_r=3.0, offset=(3, -2, 1), seed=None):
    """Head sphere (label 1) with a tumour ball (label 2); (n, n, n) int16."""
    m = np.zeros((n, n, n), np.int16)
    c = (np.array([n, n, n]) - 1) / 2
    m[ball(m.shape, c, n * 0.45)] = 1
    m[ball(m.shape, c + np.asarray(offset), tumour_r)] = 2
    return m


def brats_mask(n=24):
    """Brain label 4 with a nested tumour: edema 2 (r=4) around enhancing 3 (r=3) around core 1 (r=1.8)."""
    m = np.zeros((n, n, n), np.int16)
    c = (np.array([n, n, n]) - 1) / 2
    m[ball(m.shape, c, n * 0.45)] = 4
    t = c + np.array([2, 1, -2])
    m[ball(m.shape, t, 4.0)] = 2
    m[ball(m.shape, t, 3.0)] = 3
    m[ball(m.shape, t, 1.8)] = 1
    return m


def context(m, spacing=(1.0, 1.0, 1.0), names=NAMES, tumour=None, head=None):
    roles = resolve_roles(tumour, head, names, np.unique(m).tolist())
    donors = InMemoryDonors({"a": (m, spacing), "b": (head_mask(20, 2.5, (0, 2, 0)), (1.2, 1.2, 1.2))})
    return SampleContext(roles, spacing, "a", donors)


def run(op, m, seed=0, **kw):
    ctx = context(m, **kw)
    return perturb(m, op, ctx, np.random.default_rng(seed))


@pytest.mark.parametrize("op", OPS)
def test_labels_grid_and_inside_head(op):
    m = head_mask()
    out, _ = run(op, m)
    assert out.shape == m.shape and out.dtype == m.dtype
    assert set(np.unique(out)) <= {0, 1, 2}
    if op != "deform":  # deform moves the head itself; see test_deform_*
        head_region = m != 0
        assert not np.any((out == 2) & ~head_region), "tumour voxel on original background"
        assert np.array_equal(out == 0, m == 0), "background must not change"
    assert not np.array_equal(out, m)


@pytest.mark.parametrize("op", OPS)
def test_same_seed_same_output_different_seed_differs(op):
    m = head_mask()
    a, pa = run(op, m, seed=3)
    b, pb = run(op, m, seed=3)
    assert np.array_equal(a, b) and chain_to_json(pa) == chain_to_json(pb)
    if op != "remove":  # remove has nothing random
        c, _ = run(op, m, seed=4)
        assert not np.array_equal(a, c)


@pytest.mark.parametrize("op", OPS)
def test_replay_from_json_is_bit_identical(op):
    m = head_mask()
    out, chain = run(op, m, seed=7)
    text = json.dumps(chain_to_json(chain))
    back = chain_from_json(json.loads(text))
    assert np.array_equal(apply_chain(m, back), out)


def _within(got, expected):
    return abs(got - expected) <= max(VOLUME_RTOL * expected, VOLUME_ATOL_VOX)


@pytest.mark.parametrize("seed", range(4))
def test_move_volume_scales_with_cube(seed):
    m = head_mask(tumour_r=3.5)
    out, (p,) = run("move:scale_min=0.8,scale_max=1.2", m, seed=seed)
    v0 = np.count_nonzero(m == 2)
    s = p.objects[0].scale
    assert 0.8 <= s <= 1.2
    assert _within(np.count_nonzero(out == 2), v0 * s**3)


def test_move_identity_and_integer_shift_are_exact():
    m = head_mask()
    tum = m == 2
    c = np.argwhere(tum).mean(axis=0)
    base = {"shape": m.shape, "spacing": (1.0, 1.0, 1.0), "tumour_labels": (2,), "head_labels": (1,)}
    same = apply(m, MoveParams(**base, objects=(ObjectTransform(center=tuple(c)),)))
    assert np.array_equal(same, m)
    shift = np.array([-4, 3, 0])
    moved = apply(m, MoveParams(**base, objects=(ObjectTransform(center=tuple(c + shift)),)))
    assert np.array_equal(np.argwhere(moved == 2), np.argwhere(tum) + shift)


def test_move_rejects_params_that_leave_the_head():
    m = head_mask()
    base = {"shape": m.shape, "spacing": (1.0, 1.0, 1.0), "tumour_labels": (2,), "head_labels": (1,)}
    with pytest.raises(ConstraintViolation, match="outside the head"):
        apply(m, MoveParams(**base, objects=(ObjectTransform(center=(1.0, 1.0, 1.0)),)))


def test_brats_nested_labels_move_as_one_object():
    m = brats_mask()
    roles = {"names": {}, "tumour": ["1,2,3"], "head": ["4"]}
    out, (p,) = run("move", m, seed=1, **roles)
    assert set(np.unique(out)) == {0, 1, 2, 3, 4}
    assert len(p.objects) == 1
    s = p.objects[0].scale
    for lab in (1, 2, 3):
        assert _within(np.count_nonzero(out == lab), np.count_nonzero(m == lab) * s**3) or lab == 1
    # the core stays inside the enhancing rim inside the edema: same displacement for all parts
    shifts = [np.argwhere(out == lab).mean(0) - np.argwhere(m == lab).mean(0) for lab in (1, 2, 3)]
    assert np.allclose(shifts[0], shifts[1], atol=1.0) and np.allclose(shifts[1], shifts[2], atol=1.0)
    assert not np.any(np.isin(out, (1, 2, 3)) & (m == 0))


def test_per_component_moves_each_blob():
    m = head_mask(tumour_r=2.5, offset=(4, 0, 0))
    c = (np.array(m.shape) - 1) / 2
    m[ball(m.shape, c + np.array([-4, 0, 0]), 2.5)] = 2
    out, (p,) = run("move:per_component=true", m, seed=0)
    assert len(p.objects) == 2
    _, (q,) = run("move", m, seed=0)
    assert len(q.objects) == 1
    assert not np.any((out == 2) & (m == 0))


def test_remove_fills_with_head_label_only():
    m = brats_mask()
    m[m.shape[0] // 2, :, :][m[m.shape[0] // 2] == 4] = 4
    out, _ = run("remove", m, names={}, tumour=["1", "2", "3"], head=["4"])
    assert not np.isin(out, (1, 2, 3)).any()
    tum = np.isin(m, (1, 2, 3))
    assert np.all(out[tum] == 4)
    assert np.array_equal(out[~tum], m[~tum])


def test_remove_with_two_head_labels_takes_the_nearest():
    m = head_mask(tumour_r=3.0, offset=(0, 0, 0))
    m[: m.shape[0] // 2][m[: m.shape[0] // 2] == 1] = 3  # upper half is another tissue label
    out, _ = run("remove", m, names={}, tumour=["2"], head=["1", "3"])
    assert set(np.unique(out)) == {0, 1, 3}
    assert np.all(out[: m.shape[0] // 2 - 1][m[: m.shape[0] // 2 - 1] == 2] == 3)


def test_place_has_exact_size_and_is_blobby():
    m = head_mask()
    m[m == 2] = 1  # healthy mask
    out, (p,) = run("place:radius_mm=3.5", m, seed=2)
    n = np.count_nonzero(out == 2)
    assert n == target_voxels(p) == round(4 / 3 * np.pi * 3.5**3)
    assert not np.any((out == 2) & (m == 0))
    sphere = ball(m.shape, p.center, 3.5)
    assert np.count_nonzero(sphere != (out == 2)) > 0  # not a perfect sphere


def test_place_keeps_existing_tumour_by_default():
    m = head_mask()
    out, (p,) = run("place:radius_mm=2.5", m, seed=0)
    assert np.all(out[m == 2] == 2)
    assert np.count_nonzero(out == 2) == np.count_nonzero(m == 2) + target_voxels(p)


def test_transplant_takes_the_donor_tumour_and_rescales_for_spacing():
    m = head_mask()
    out, (p,) = run("transplant:donor=b", m, seed=0)
    assert p.donor_case == "b" and p.donor_spacing == (1.2, 1.2, 1.2)
    donor_vox = np.count_nonzero(head_mask(20, 2.5, (0, 2, 0)) == 2)
    assert _within(np.count_nonzero(out == 2), donor_vox * 1.2**3 * p.transform.scale**3)


def test_deform_identity_is_exact_and_volumes_scale():
    from synthkit.masks.deform import DeformParams

    m = head_mask()
    base = {"shape": m.shape, "spacing": (1.0, 1.0, 1.0), "tumour_labels": (2,), "head_labels": (1,)}
    ident = DeformParams(**base, center=(11.5, 11.5, 11.5), rotation_deg=(0, 0, 0), scale=1.0,
                         translation=(0, 0, 0))
    assert np.array_equal(apply(m, ident), m)
    out, _ = run("deform:scale_min=0.9,scale_max=0.9", m, seed=1)
    assert _within(np.count_nonzero(out), np.count_nonzero(m) * 0.729)


def test_anisotropic_spacing_rotation_keeps_volume():
    m = head_mask(tumour_r=3.5)
    out, (p,) = run("move:max_rotation_deg=40", m, seed=5, spacing=(1.0, 1.0, 2.0))
    assert _within(np.count_nonzero(out == 2), np.count_nonzero(m == 2) * p.objects[0].scale ** 3)


def test_nearest_neighbour_never_invents_labels():
    from synthkit.masks.geometry import transform_object

    obj = np.zeros((9, 9, 9), np.int16)
    obj[1:8, 1:8, 1:8] = 5
    obj[3:6, 3:6, 3:6] = 9
    ctrl = np.random.default_rng(0).uniform(-1.5, 1.5, (3, 4, 4, 4))
    out = transform_object(obj, np.array([4.0, 4, 4]), (1, 1, 1), (20, 20, 20), (0.7, 0.9, 1.3),
                           (10.0, 10.0, 10.0), (17.0, -33.0, 8.0), 1.13, ctrl)
    assert set(np.unique(out)) == {0, 5, 9}


def test_errors_are_clear():
    m = head_mask()
    healthy = np.where(m == 2, 1, m).astype(m.dtype)
    with pytest.raises(MaskOpError, match="no tumour"):
        run("move", healthy)
    with pytest.raises(MaskOpError, match="no valid parameters after 3 tries"):
        perturb(m, "move:scale_min=4,scale_max=4", context(m), np.random.default_rng(0), max_tries=3)
    _, (p,) = run("move", m)
    with pytest.raises(MaskOpError, match="grid"):
        apply(m[:-1], p)


def test_apply_takes_a_volume_and_keeps_its_affine():
    from synthkit.io.volume import Volume

    m = head_mask()
    out, chain = run("move", m, seed=2)
    aff = np.diag([1.0, 1.0, 1.0, 1.0])
    aff[:3, 3] = (3.0, -4.0, 5.0)
    vol = apply_chain(Volume(data=m[None], affine=aff), chain)
    assert np.array_equal(vol.data[0], out) and np.array_equal(vol.affine, aff)
