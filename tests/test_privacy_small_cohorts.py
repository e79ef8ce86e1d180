"""The copy flag at the cohort sizes people have: 8 training + 8 holdout subjects sharing one
anatomy, and 4 training subjects without a holdout (the BraTS-like case)."""

from __future__ import annotations

import numpy as np
import privacy_cohorts as pc
import pytest

from synthkit.privacy.audit import calibration
from synthkit.privacy.audit.check import CheckSettings, MemorizationChecker
from synthkit.privacy.audit.volumes import prepare_set

SIZE = 24
SETTINGS = CheckSettings(shape=(SIZE,) * 3, use_features=False)
SOURCES = (2, 5)


@pytest.fixture(scope="module")
def eight_and_eight():
    """8 training, 8 holdout and 6 fresh subjects of one texture; one-voxel-shifted noisy copies
    of training subjects 2 and 5."""
    train, holdout = pc.cohort(range(8), SIZE), pc.cohort(range(8, 16), SIZE)
    fresh = pc.cohort(range(40, 46), SIZE, prefix="fresh_")
    rng = np.random.default_rng(3)
    copies, source = [], {}
    for j in SOURCES:
        cid, img, aff, lab = train[j]
        copies.append((f"copy_{j}", pc.near_copy(img, rng, noise=0.15), aff, np.roll(lab, 1, axis=1)))
        source[f"copy_{j}"] = cid
    checker = MemorizationChecker(prepare_set(train, SETTINGS), prepare_set(holdout, SETTINGS), SETTINGS)
    return checker, checker.run(prepare_set(fresh + copies, SETTINGS)), source


def test_copies_flagged_with_their_sources_fresh_subjects_not(eight_and_eight):
    _, result, source = eight_and_eight
    by_id = {v["id"]: v for v in result.volumes}
    for cid, src in source.items():
        assert by_id[cid]["flagged"] and by_id[cid]["nearest"] == src, by_id[cid]
    fresh = [v for v in result.volumes if v["id"].startswith("fresh_")]
    assert len(fresh) == 6 and not any(v["flagged"] for v in fresh), [v["reason"] for v in fresh]
    assert result.calibration["planted_copies"]["passed"]


def test_the_rate_is_set_for_the_run_and_its_uncertainty_stated(eight_and_eight):
    checker, result, _ = eight_and_eight
    cal = result.calibration
    assert cal["calibrated"] and cal["family"] == "run" and cal["alpha"] == 0.05 and cal["n_synthetic"] == 8
    k = len(cal["thresholds"])
    assert cal["alpha_per_test"] == pytest.approx(0.05 / (8 * k))
    for th in cal["thresholds"].values():
        assert th["n_reference"] == 8 and th["alpha"] == pytest.approx(cal["alpha_per_test"])
        ri = th["rate_interval"]
        assert ri["q05"] < th["alpha"] < ri["q95"]  # 8 references: the realised rate is uncertain both ways
        # never flags a value the real unseen subjects reached themselves
        assert th["reference_flagged"] == 0
        assert th["value"] == (max if th["direction"] == "above" else min)(th["normal_bound"], th["rank_bound"])
    assert "8 reference subjects" in cal["promise"] and "95% point" in cal["promise"]
    # a larger run shares the same rate over more volumes: every bound moves outwards
    wider = checker.rule_for(64).to_dict()
    for name, th in cal["thresholds"].items():
        assert (wider[name]["value"] >= th["value"]) if th["direction"] == "above" else (wider[name]["value"] <= th["value"])


def test_realised_rate_of_the_prediction_bound_is_the_nominal_rate_on_average():
    for n in (8, 30):
        q05, q50, q95, mean = calibration.realised_rate(n, 1e-3)
        assert q05 < q50 < q95 and mean == pytest.approx(1e-3, rel=0.35)


def test_four_subjects_without_holdout_says_it_cannot_promise_and_drops_only_verbatim_copies():
    """Too few references: the rule is the fixed near-verbatim one and the result says so; fresh
    subjects pass, a near-verbatim copy is still flagged, nothing is dropped wholesale."""
    train = pc.cohort(range(4), SIZE)
    fresh = pc.cohort(range(40, 46), SIZE, prefix="fresh_")
    cid, img, aff, lab = train[1]
    verbatim = [("verbatim_1", pc.near_copy(img, np.random.default_rng(0), shift=(0, 0, 0), noise=0.03), aff, lab)]
    settings = CheckSettings(shape=(SIZE,) * 3, use_features=False, planted_max=1)
    checker = MemorizationChecker(prepare_set(train, settings), None, settings)
    result = checker.run(prepare_set(fresh + verbatim, settings))
    cal = result.calibration
    assert not cal["calibrated"] and cal["alpha_per_test"] is None
    assert "too few to promise" in cal["promise"] and "--holdout" in cal["promise"]
    assert any("too few to promise" in s for s in result.not_computed)
    flagged = {v["id"]: v for v in result.volumes if v["flagged"]}
    assert set(flagged) == {"verbatim_1"} and flagged["verbatim_1"]["nearest"] == cid
    assert set(cal["thresholds"]) == {"similarity", "identity"}
