from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch

from synthkit.metrics import fid


def scipy_fid(a: np.ndarray, b: np.ndarray) -> float:
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    covmean = scipy.linalg.sqrtm(s1 @ s2)
    covmean = covmean.real
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


@pytest.mark.parametrize("shift", [0.0, 0.3, 2.0])
def test_fid_equals_scipy_sqrtm(shift):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    b = rng.normal(size=(250, 16)) @ rng.normal(size=(16, 16)) * 0.7 + shift
    want = scipy_fid(a, b)
    got = fid(torch.from_numpy(a).float().double(), b)
    assert got == pytest.approx(want, rel=1e-6)


def test_sample_space_route_equals_covariance_route_when_n_below_f():
    from synthkit.metrics import feature_stats, frechet_distance

    rng = np.random.default_rng(4)
    a = rng.normal(size=(30, 80)) @ rng.normal(size=(80, 80)) * 0.2
    b = rng.normal(size=(45, 80)) * 1.3 + 0.2
    via_cov = frechet_distance(*feature_stats(a), *feature_stats(b))
    assert fid(a, b) == pytest.approx(via_cov, rel=1e-7)
    assert fid(a, b) == pytest.approx(scipy_fid(a, b), rel=1e-4)  # sqrtm of a singular product


def test_fid_identical_sets_is_zero_and_symmetric():
    rng = np.random.default_rng(1)
    a = torch.from_numpy(rng.normal(size=(40, 64)))  # N < F: singular covariance
    b = torch.from_numpy(rng.normal(size=(50, 64)) + 0.5)
    assert fid(a, a) == pytest.approx(0.0, abs=1e-6)
    assert fid(a, b) == pytest.approx(fid(b, a), rel=1e-8)
    assert np.isfinite(fid(a, b)) and fid(a, b) > 0


def test_fid_grows_with_mean_shift():
    rng = np.random.default_rng(2)
    a = rng.normal(size=(200, 8))
    vals = [fid(a, rng.normal(size=(200, 8)) + s) for s in (0.0, 0.5, 1.0, 2.0)]
    assert vals == sorted(vals)
    assert vals[-1] == pytest.approx(8 * 4, rel=0.15)


def test_fid_bad_shapes_raise():
    with pytest.raises(ValueError):
        fid(np.zeros((10, 4)), np.zeros((10, 5)))
    with pytest.raises(ValueError):
        fid(np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError):
        fid(np.zeros((1, 4)), np.zeros((10, 4)))
    with pytest.raises(ValueError):
        fid(np.full((3, 4), np.nan), np.zeros((10, 4)))


def test_package_gives_the_metric_functions_even_after_the_pipeline_is_imported():
    import inspect

    import synthkit.metrics.evaluate  # noqa: F401 - imports every private metric module
    from synthkit.metrics import fid as f
    from synthkit.metrics import mmd, ms_ssim, prdc

    assert all(inspect.isfunction(g) for g in (f, mmd, ms_ssim, prdc))
    assert f.__name__ == "fid" and prdc.__module__ == "synthkit.metrics._prdc"
