"""The memorization check on realistic heads: planted near-copies among fresh volumes.

Training, holdout and fresh volumes are demo-cohort subjects (MNI152 heads with tumours,
random pose, deformation, bias field and noise); fresh ones come from a different seed, so
they look exactly like real data the model never saw.
"""

from __future__ import annotations

import numpy as np
import pytest

from synthkit.io import discover_cohort, read_image, read_mask
from synthkit.privacy.audit.calibration import plant_copy
from synthkit.privacy.audit.check import CheckSettings, MemorizationChecker
from synthkit.privacy.audit.volumes import prepare_set

SIZE = 24


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    from synthkit.io.demo_cohort import write_demo_cohort

    root = tmp_path_factory.mktemp("privacy")
    real = write_demo_cohort(root / "real", n=16, size=SIZE, seed=0)
    fresh = write_demo_cohort(root / "fresh", n=6, size=SIZE, seed=1)
    return discover_cohort(real.root), discover_cohort(fresh.root)


def _items(cases, prefix=""):
    for c in cases:
        img, msk = read_image(c), read_mask(c)
        yield prefix + c.case_id, img.data, img.affine, msk.data


def _synthetic(real, fresh):
    """Fresh subjects plus planted copies of training cases 2, 4, 7."""
    rng = np.random.default_rng(7)
    items = list(_items(fresh.cases, "fresh-"))
    planted = {}
    for name, j, kw in [("copy-noise-shift", 2, {"noise": 0.1, "shift": (1, 0, 0)}),
                        ("copy-flip", 4, {"noise": 0.1, "flip": True}),
                        ("copy-flip-shift", 7, {"noise": 0.05, "shift": (0, -1, 1), "flip": True})]:
        img = read_image(real.cases[j])
        items.append((name, plant_copy(img.data, rng, **kw), img.affine, None))
        planted[name] = real.cases[j].case_id
    return items, planted


@pytest.mark.parametrize("use_holdout", [True, False])
def test_exactly_the_planted_copies_are_flagged(cohorts, use_holdout):
    real, fresh = cohorts
    settings = CheckSettings(shape=(SIZE,) * 3, use_features=False)
    train = prepare_set(_items(real.cases[:10]), settings)
    holdout = prepare_set(_items(real.cases[10:]), settings) if use_holdout else None
    items, planted = _synthetic(real, fresh)
    synth = prepare_set(items, settings)
    result = MemorizationChecker(train, holdout, settings).run(synth)

    flagged = {v["id"]: v for v in result.volumes if v["flagged"]}
    assert set(flagged) == set(planted)
    for name, source in planted.items():
        assert flagged[name]["nearest"] == source
        assert flagged[name]["reason"]
    assert flagged["copy-flip"]["flipped"] and not flagged["copy-noise-shift"]["flipped"]
    assert flagged["copy-noise-shift"]["shift"] == [1, 0, 0]
    assert result.calibration["planted_copies"]["passed"], result.calibration["planted_copies"]
    th = result.calibration["thresholds"]["similarity"]
    assert all(t["reference_flagged"] == 0 for t in result.calibration["thresholds"].values())
    if use_holdout:
        assert th["reference"] == "holdout-to-train"
        assert 0.0 <= result.cohort["closer_to_train"]["fraction"] <= 1.0
        assert 0.0 <= result.cohort["membership_inference"]["auc"] <= 1.0
        assert not result.not_computed[:2] or "feature" in result.not_computed[0]
    else:
        assert th["reference"].startswith("train-to-train")
        assert "closer_to_train" not in result.cohort
        assert any("closer_to_train" in s for s in result.not_computed)


def test_feature_space_runs_and_does_not_flag_fresh(cohorts):
    from synthkit.privacy.audit.features import MedicalNetExtractor

    real, fresh = cohorts
    settings = CheckSettings(shape=(SIZE,) * 3)
    ext = MedicalNetExtractor()
    train = prepare_set(_items(real.cases[:10]), settings, ext)
    holdout = prepare_set(_items(real.cases[10:]), settings, ext)
    synth = prepare_set(_items(fresh.cases, "fresh-"), settings, ext)
    result = MemorizationChecker(train, holdout, settings, ext).run(synth, planted_check=False)
    assert "feature_distance" not in result.calibration["thresholds"]  # random weights: reported only
    assert any("feature rule" in s for s in result.not_computed)
    assert all(v["feature_distance"] is not None and not v["flagged"] for v in result.volumes)
    assert "random weights" in result.settings["feature_extractor"]


def test_mirror_copy_of_itself_is_caught_by_leave_one_out(cohorts):
    """Train-to-train reference: a training volume's own mirror is excluded as 'self' only
    when it is the same index; a planted copy among synthetic volumes is still caught."""
    real, _ = cohorts
    settings = CheckSettings(shape=(SIZE,) * 3, use_features=False)
    train = prepare_set(_items(real.cases[:8]), settings)
    checker = MemorizationChecker(train, None, settings)
    rec, _ = checker.score(train)  # every training volume is its own perfect copy
    assert all(r["flagged"] and r["similarity"] > 0.999 and r["identity"] > 0.95 for r in rec)
    assert [r["nearest"] for r in rec] == train.ids
