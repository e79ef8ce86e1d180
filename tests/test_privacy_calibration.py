"""The copy-flag rule: prediction bounds calibrated on reference values, and cohort scores."""

from __future__ import annotations

import numpy as np
import pytest

from synthkit.privacy.audit import calibration as cal
from synthkit.privacy.audit import scores


def test_bound_has_about_the_requested_false_positive_rate():
    rng = np.random.default_rng(0)
    z = rng.normal(1.0, 0.2, size=200)
    ref = np.tanh(z)  # correlations whose Fisher z is normal
    th = cal.calibrate(ref, statistic="similarity", direction="above", transform="fisher_z", alpha=0.01)
    fresh = np.tanh(rng.normal(1.0, 0.2, size=20000))
    rate = th.crosses(fresh).mean()
    assert 0.002 < rate < 0.03
    assert th.reference_flagged <= 6
    looser = cal.calibrate(ref, statistic="similarity", direction="above", transform="fisher_z", alpha=0.1)
    assert looser.value < th.value


def test_lower_tail_bound_and_log_transform():
    rng = np.random.default_rng(1)
    ref = np.exp(rng.normal(-0.1, 0.1, size=30))
    th = cal.calibrate(ref, statistic="ratio", direction="below", transform="log", alpha=1e-3)
    assert 0 < th.value < np.percentile(ref, 5) and th.reference_flagged <= 1
    assert th.crosses(np.exp(rng.normal(-0.1, 0.1, size=20000))).mean() < 0.01
    assert th.crosses(np.array([th.value / 2, 1.0, np.nan])).tolist() == [True, False, False]


def test_calibrate_refuses_tiny_reference_and_bad_alpha():
    with pytest.raises(ValueError, match="at least 3"):
        cal.calibrate([0.5, np.nan, 0.6], statistic="s", direction="above", transform="fisher_z")
    with pytest.raises(ValueError, match="alpha"):
        cal.calibrate([0.5, 0.6, 0.7], statistic="s", direction="above", transform="fisher_z", alpha=0.7)


def test_rule_reasons_name_the_statistic():
    rule = cal.calibrate_rule({"similarity": np.array([0.5, 0.55, 0.6, 0.52]),
                               "ratio": np.array([0.9, 0.8, 0.95, 0.85]), "identity": None})
    flags, reasons = rule.apply({"similarity": np.array([0.56, 0.999]), "ratio": np.array([0.9, 0.01])})
    assert flags.tolist() == [False, True]
    assert reasons[0] == "" and "similarity" in reasons[1] and "ratio" in reasons[1]
    assert set(rule.to_dict()) == {"similarity", "ratio"}
    with pytest.raises(ValueError, match="unknown statistic"):
        cal.calibrate_rule({"nonsense": np.ones(5)})


def test_logit_bound_for_dice():
    rng = np.random.default_rng(2)
    ref = 1 / (1 + np.exp(-rng.normal(3.0, 0.3, size=40)))  # Dice values around 0.95
    th = cal.calibrate(ref, statistic="shape_dice", direction="above", transform="logit", alpha=1e-3)
    assert ref.max() < th.value < 1.0 and th.reference_flagged == 0
    assert th.crosses(np.array([0.999, 0.9])).tolist() == [True, False]


def test_plant_copy_is_deterministic_and_close():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(1, 8, 8, 8)).astype(np.float32)
    a = cal.plant_copy(v, np.random.default_rng(3), noise=0.1, shift=(1, 0, 0), flip=True)
    b = cal.plant_copy(v, np.random.default_rng(3), noise=0.1, shift=(1, 0, 0), flip=True)
    assert np.array_equal(a, b)
    back = np.roll(a, (-1, 0, 0), axis=(1, 2, 3))[:, ::-1]
    assert np.corrcoef(back.ravel(), v.ravel())[0, 1] > 0.98


def test_closer_to_train_binomial():
    tr = np.array([0.9] * 18 + [0.1] * 2)
    ho = np.full(20, 0.5)
    res = scores.closer_to_train(tr, ho, n_train=10, n_holdout=10)
    assert res["fraction"] == 0.9 and res["expected"] == 0.5 and res["p_value"] < 1e-3
    even = scores.closer_to_train(np.r_[np.full(10, 0.9), np.full(10, 0.1)], ho, n_train=10, n_holdout=10)
    assert even["fraction"] == 0.5 and even["p_value"] > 0.3
    assert scores.closer_to_train(tr, ho, n_train=30, n_holdout=10)["expected"] == 0.75
    with pytest.raises(ValueError):
        scores.closer_to_train(tr, ho[:3], n_train=1, n_holdout=1)


def test_membership_auc():
    perfect = scores.membership_inference_auc(np.array([0.9, 0.8]), np.array([0.1, 0.2, 0.3]))
    assert perfect["auc"] == 1.0
    same = scores.membership_inference_auc(np.full(4, 0.5), np.full(5, 0.5))
    assert same["auc"] == 0.5
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=15), rng.normal(size=12)
    assert scores.membership_inference_auc(a, b)["auc"] == pytest.approx(1 - scores.membership_inference_auc(b, a)["auc"])
    with pytest.raises(ValueError):
        scores.membership_inference_auc(np.array([]), b)
