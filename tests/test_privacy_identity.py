"""Identity, not voxels: copies of subjects that share their anatomy are caught, fresh subjects
are not, and the planted-copy self-test can fail (and says so)."""

from __future__ import annotations

import numpy as np
import privacy_cohorts as pc
import pytest

from synthkit.privacy.audit import align, calibration, planted
from synthkit.privacy.audit.check import CheckSettings, MemorizationChecker
from synthkit.privacy.audit.volumes import prepare_set

SIZE = 24
SETTINGS = CheckSettings(shape=(SIZE,) * 3, use_features=False)
SOURCES = (1, 4, 7, 9)


@pytest.fixture(scope="module")
def shared():
    """12 training, 12 holdout and 8 fresh subjects of ONE texture; near and warped copies."""
    train = pc.cohort(range(12), SIZE)
    holdout = pc.cohort(range(12, 24), SIZE)
    fresh = pc.cohort(range(40, 48), SIZE, prefix="fresh_")
    rng = np.random.default_rng(5)
    copies, source = [], {}
    for j in SOURCES:
        cid, img, aff, lab = train[j]
        copies.append((f"near_{j}", pc.near_copy(img, rng, noise=0.15), aff, np.roll(lab, 1, axis=1)))
        copies.append((f"warp_{j}", pc.warped_copy(img, rng, rotation=2.0, scale=0.02, shift=1.0, elastic=0.4,
                                                   gamma=0.15, bias=0.05, noise=0.15), aff, None))
        source[f"near_{j}"] = source[f"warp_{j}"] = cid
    tr, ho = prepare_set(train, SETTINGS), prepare_set(holdout, SETTINGS)
    checker = MemorizationChecker(tr, ho, SETTINGS)
    result = checker.run(prepare_set(fresh + copies, SETTINGS))
    return checker, result, source


def test_subjects_share_their_anatomy(shared):
    """The cohort is the hard case: fresh subjects correlate with training subjects voxel by voxel."""
    _, result, _ = shared
    fresh = [v["similarity"] for v in result.volumes if v["id"].startswith("fresh_")]
    assert min(fresh) > 0.5


def test_near_and_warped_copies_flagged_no_fresh_subject_is(shared):
    _, result, source = shared
    by_id = {v["id"]: v for v in result.volumes}
    for cid, src in source.items():
        assert by_id[cid]["flagged"], (cid, by_id[cid])
        assert by_id[cid]["nearest"] == src
    fresh = [v for v in result.volumes if v["id"].startswith("fresh_")]
    assert len(fresh) == 8 and not any(v["flagged"] for v in fresh)  # false positives on unseen subjects: 0 of 8
    th = result.calibration["thresholds"]
    assert set(th) == {"similarity", "identity", "ratio", "shape_dice"}
    assert all(t["reference"] == "holdout-to-train" and t["n_reference"] == 12 for t in th.values())
    assert all(t["reference_flagged"] == 0 for t in th.values())  # and 0 of the 12 holdout subjects
    # the identity statistics alone catch every copy, warped ones included (voxels are not needed)
    assert all("identity" in by_id[c]["reason"] or "ratio" in by_id[c]["reason"] for c in source)


def test_planted_self_test_passes_with_a_holdout_and_never_moves_a_bound(shared):
    checker, result, _ = shared
    report = result.calibration["planted_copies"]
    assert report["passed"] and report["catch_rate"] >= 0.9 and report["planted"] == 12
    assert set(report["by_kind"]) == {"shift+noise", "warp+intensity+noise", "mirror+warp+noise"}
    assert "passed" in report["verdict"]
    ref = checker._values(checker.reference)
    for name, th in checker.rule.to_dict().items():  # every bound is the plain calibration of real references
        direction, transform = calibration.STATISTICS[name]
        again = calibration.calibrate(ref[name], statistic=name, direction=direction, transform=transform,
                                      alpha=checker.rule.alpha_per_test)
        assert th["value"] == again.value


def test_self_test_fails_and_says_so_with_too_few_references():
    train = prepare_set(pc.cohort(range(8), SIZE), SETTINGS)
    tiny = prepare_set(pc.cohort(range(20, 23), SIZE), SETTINGS)  # 3 holdout subjects: t_2 bounds are useless
    checker = MemorizationChecker(train, tiny, CheckSettings(shape=(SIZE,) * 3, use_features=False, planted_max=2))
    report = checker.planted_copy_check()
    assert not report["passed"] and report["catch_rate"] < 0.9
    assert report["verdict"].startswith("planted-copy self-test FAILED") and "\n" not in report["verdict"]
    assert len(report["missed"]) == report["planted"] - report["caught"]


def test_registration_recovers_a_known_affine():
    vols = np.stack([p for p in prepare_set(pc.cohort(range(3), SIZE), SETTINGS).prepared])
    theta = np.tile(np.eye(3, 4), (3, 1, 1))
    theta[:, :3, :3] = [[0.97, 0.03, 0], [-0.03, 0.97, 0], [0, 0, 1.02]]
    theta[:, :, 3] = [0.06, -0.04, 0.05]
    moved = align.warp(vols, theta)
    back = align.register(moved, vols[0])[0:1]
    ncc = lambda a, b: float((a * b).sum() / np.linalg.norm(a) / np.linalg.norm(b))
    exact = np.eye(3, 4)[None].copy()  # the true inverse: as good as two interpolations allow
    inv = np.linalg.inv(theta[0, :, :3])
    exact[0, :, :3], exact[0, :, 3] = inv, -inv @ theta[0, :, 3]
    best = ncc(align.warp(moved[:1], exact)[0], vols[0])
    got = ncc(align.warp(moved[:1], back)[0], vols[0])
    assert got > ncc(moved[0], vols[0]) + 0.1 and got > best - 0.01, (got, best)
    tmpl, th = align.build_template(vols)
    assert tmpl.mean.shape == vols.shape[1:] and th.shape == (3, 3, 4) and 0 <= tmpl.head.min() <= tmpl.head.max() <= 1


def test_histogram_matching_undoes_a_gamma():
    vols = prepare_set(pc.cohort(range(4), SIZE), SETTINGS).prepared
    tmpl, _ = align.build_template(vols)
    head = align.head_of(vols[:1])[0] > 0
    pos = np.where(head, vols[0] - vols[0][:, head].min() + 0.1, 0)
    a = align.match_histogram(pos, head, tmpl)
    b = align.match_histogram(pos ** 1.5, head, tmpl)  # same ranks, another contrast
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert not np.allclose(a, pos)


def test_dice_matrix():
    a = np.zeros((2, 4, 4, 4), bool)
    a[0, :2] = True
    a[1, :] = True
    d = align.dice_matrix(a, a)
    np.testing.assert_allclose(np.diag(d), 1.0)
    assert d[0, 1] == pytest.approx(2 * 32 / (32 + 64))


def test_plants_are_seeded_and_kinds_differ():
    vol = prepare_set(pc.cohort([0], SIZE), SETTINGS).prepared[0]
    kind = planted.DEFAULT_KINDS[1]
    a = planted.plant(vol, kind, np.random.default_rng(1))
    b = planted.plant(vol, kind, np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)
    head = a[0] != 0
    assert abs(a[0][head].mean()) < 1e-4 and abs(a[0][head].std() - 1) < 1e-3  # prepared again
    clean = planted.plant(vol, planted.PlantKind("copy", noise=0.0), np.random.default_rng(0))
    np.testing.assert_allclose(clean, vol, atol=1e-4)  # no perturbation: the same prepared volume
