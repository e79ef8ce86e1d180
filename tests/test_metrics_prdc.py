"""Precision / recall / density / coverage (Naeem et al. 2020): contract tests."""

from __future__ import annotations

import numpy as np
import pytest

from synthkit.metrics import prdc
from synthkit.metrics._prdc import distances, prdc_on_rows
from synthkit.metrics.bootstrap import bootstrap_rows


def _cloud(n, f=8, seed=0, shift=0.0, scale=1.0):
    return np.random.default_rng(seed).normal(shift, scale, (n, f))


def test_identical_sets_are_perfect_and_density_is_k_plus_one_over_k():
    x = _cloud(40)
    for k in (1, 3, 5):
        r = prdc(x, x, k=k)
        assert r["precision"] == r["recall"] == r["coverage"] == 1.0
        assert r["density"] == pytest.approx((k + 1) / k)


def test_same_distribution_is_near_one_and_disjoint_is_zero():
    real, fake = _cloud(400, seed=0), _cloud(400, seed=1)
    r = prdc(real, fake)
    for m in ("precision", "recall", "coverage"):
        assert r[m] > 0.85, (m, r)
    assert 0.8 < r["density"] < 1.2
    far = prdc(real, _cloud(50, seed=2, shift=100.0))
    assert far == {"precision": 0.0, "recall": 0.0, "density": 0.0, "coverage": 0.0}


def test_fidelity_and_diversity_separate():
    """A collapsed generator (all fakes near the real mean) keeps precision, loses recall and
    coverage; a too-wide one keeps recall and loses precision."""
    real = _cloud(300, seed=0)
    collapsed = prdc(real, _cloud(300, seed=1, scale=0.2))
    wide = prdc(real, _cloud(300, seed=1, scale=4.0))
    assert collapsed["precision"] > 0.95 and collapsed["recall"] < 0.3 and collapsed["coverage"] < 0.5
    assert wide["precision"] < 0.3 and wide["recall"] > 0.9
    assert collapsed["density"] > wide["density"]


def test_precision_and_recall_swap_when_sets_swap():
    a, b = _cloud(60, seed=0), _cloud(45, seed=3, scale=1.5)
    ab, ba = prdc(a, b), prdc(b, a)
    assert ab["precision"] == ba["recall"] and ab["recall"] == ba["precision"]
    assert ab != ba  # density and coverage are not symmetric


@pytest.mark.parametrize("bad", [
    (np.zeros((10, 4, 1)), np.zeros((10, 4))),   # not 2-D
    (np.zeros((10, 4)), np.zeros((10, 5))),      # feature sizes differ
    (np.zeros((5, 4)), np.zeros((10, 4))),       # N <= k
    (np.full((10, 4), np.nan), np.zeros((10, 4))),
])
def test_bad_shapes_raise(bad):
    with pytest.raises(ValueError):
        prdc(*bad, k=5)


def test_bootstrap_rows_ignore_duplicate_neighbours_and_repeat_bit_for_bit():
    real, fake = _cloud(30, seed=0), _cloud(30, seed=1)
    d = distances(real, fake)
    # a resample that duplicates every row: radii come from distinct items (a duplicate is not
    # its own nearest neighbour), so the fractions equal the plain ones; density counts every
    # real ball twice
    idx = np.repeat(np.arange(30), 2)
    doubled = prdc_on_rows(*d, idx, idx, 5)
    plain = prdc_on_rows(*d, np.arange(30), np.arange(30), 5)
    for m in ("precision", "recall", "coverage"):
        assert doubled[m] == pytest.approx(plain[m])
    assert doubled["density"] == pytest.approx(2 * plain["density"])
    with pytest.raises(ValueError):
        prdc_on_rows(*d, np.zeros(30, int), np.arange(30), 5)  # one distinct item

    def metric(ia, ib):
        return prdc_on_rows(*d, ia, ib, 5)

    a, b = bootstrap_rows(metric, 30, 30, n_boot=20, seed=4), bootstrap_rows(metric, 30, 30, n_boot=20, seed=4)
    assert a == b and set(a) == {"precision", "recall", "density", "coverage"}
    for iv in a.values():
        assert iv.n == 20 and iv.ci95[0] <= iv.ci95[1] and np.isfinite(iv.std)
