from __future__ import annotations

import numpy as np
import pytest
import torch

from synthkit.metrics import mmd


def loop_mmd2(x: np.ndarray, y: np.ndarray, bws: list[float], unbiased: bool) -> float:
    """Independent double-loop implementation of Gretton's MMD^2 (u- or v-statistic)."""

    def k(p, q):
        d = float(((p - q) ** 2).sum())
        return sum(np.exp(-d / (2 * s * s)) for s in bws) / len(bws)

    n, m = len(x), len(y)
    sxx = sum(k(x[i], x[j]) for i in range(n) for j in range(n) if not unbiased or i != j)
    syy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if not unbiased or i != j)
    sxy = sum(k(x[i], y[j]) for i in range(n) for j in range(m))
    dx = n * (n - 1) if unbiased else n * n
    dy = m * (m - 1) if unbiased else m * m
    return sxx / dx + syy / dy - 2 * sxy / (n * m)


@pytest.mark.parametrize("unbiased", [True, False])
def test_gaussian_mmd_matches_loop(unbiased):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(12, 5)), rng.normal(size=(9, 5)) + 0.4
    got = mmd(torch.from_numpy(x), torch.from_numpy(y), bandwidths=[0.7, 2.0], unbiased=unbiased)
    assert got == pytest.approx(loop_mmd2(x, y, [0.7, 2.0], unbiased), rel=1e-9, abs=1e-12)


def test_median_heuristic_matches_explicit_bandwidths():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(10, 3)), rng.normal(size=(11, 3))
    z = np.concatenate([x, y])
    d = np.sqrt(((z[:, None] - z[None]) ** 2).sum(-1))[np.triu_indices(len(z), 1)]
    s0 = float(np.median(d))
    want = loop_mmd2(x, y, [s0 * f for f in (0.25, 0.5, 1, 2, 4)], True)
    assert mmd(torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(want, rel=1e-9)


def test_linear_kernel_biased_is_mean_difference():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(20, 4)), rng.normal(size=(30, 4)) + 1
    want = float(((x.mean(0) - y.mean(0)) ** 2).sum())
    got = mmd(torch.from_numpy(x), torch.from_numpy(y), kernel="linear", unbiased=False)
    assert got == pytest.approx(want, rel=1e-9)


def test_identical_sets_and_growth_with_shift():
    rng = np.random.default_rng(3)
    a = torch.from_numpy(rng.normal(size=(40, 8)))
    assert mmd(a, a, unbiased=False) == 0.0
    assert mmd(a, a, kernel="linear", unbiased=False) == 0.0
    assert abs(mmd(a, a)) < 0.05
    vals = [mmd(a, torch.from_numpy(rng.normal(size=(40, 8)) + s), bandwidths=[3.0]) for s in (0, 0.5, 1, 2)]
    assert vals == sorted(vals) and vals[-1] > 0.2
    assert mmd(a, a + 1, bandwidths=[3.0]) == pytest.approx(mmd(a + 1, a, bandwidths=[3.0]))


def test_bad_input_raises():
    with pytest.raises(ValueError):
        mmd(torch.zeros(5, 3), torch.zeros(5, 4))
    with pytest.raises(ValueError):
        mmd(torch.zeros(5, 3), torch.zeros(5, 3), kernel="cubic")
    with pytest.raises(ValueError):
        mmd(torch.zeros(5, 3), torch.zeros(5, 3), bandwidths=[0.0])


def test_precomputed_kernel_route_matches_and_handles_bootstrap_repeats():
    from synthkit.metrics._mmd import gaussian_kernel, mmd_from_kernel

    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(8, 3)), rng.normal(size=(7, 3)) + 0.5
    z = torch.from_numpy(np.concatenate([x, y]))
    k = gaussian_kernel(z, z, [1.0, 2.0])
    ia, ib = torch.tensor([0, 0, 3, 5, 7]), torch.tensor([8, 9, 9, 14])
    want = mmd(z[ia], z[ib], bandwidths=[1.0, 2.0])
    assert mmd_from_kernel(k, ia, ib) == pytest.approx(want, rel=1e-12)
