from __future__ import annotations

import numpy as np
import pytest
import torch

from synthkit.metrics import features as feat
from synthkit.metrics.c2st import auc, c2st
from synthkit.metrics.medicalnet import build


def _head(size=16, seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:size, :size, :size] - size / 2
    v = np.where(x**2 + y**2 + z**2 < (size / 2.5) ** 2, 100 + 30 * rng.random((size,) * 3), 0.0)
    return v.astype(np.float32)


def test_equalization_is_uniform_over_foreground_and_zero_outside():
    v = _head(24)
    eq = feat.equalize_foreground(v)
    fg = v > 0
    assert np.all(eq[~fg] == 0) and eq[fg].min() > 0 and eq[fg].max() == pytest.approx(1.0)
    # equalized foreground is ~uniform: its deciles sit near 0.1 .. 0.9
    dec = np.percentile(eq[fg], np.arange(10, 100, 10))
    np.testing.assert_allclose(dec, np.arange(0.1, 1.0, 0.1), atol=0.03)
    # invariant to monotone intensity changes (the point of equalizing before features)
    np.testing.assert_allclose(feat.equalize_foreground(np.sqrt(v) * 3 + 0), eq, atol=2 / 256)


def test_foreground_ignores_faint_background_noise():
    v = _head(16)
    noisy = v + np.random.default_rng(0).normal(0, 0.5, v.shape).astype(np.float32)
    assert (feat.foreground(noisy) == (v > 0)).mean() > 0.99


def test_medicalnet_normalize_zscores_nonzero():
    v = feat.medicalnet_normalize(feat.equalize_foreground(_head(16)))
    nz = v != 0
    assert abs(v[nz].mean()) < 1e-4 and v[nz].std() == pytest.approx(1.0, rel=1e-3)


def test_prepare_resize_unit_range_shapes():
    vol = _head(16)[None]
    assert feat.resize_to(vol, (12, 16, 20)).shape == (1, 12, 16, 20)
    assert feat.resize_to(vol, (16, 16, 16)) is not None
    u = feat.unit_range(vol)
    assert u.min() == 0 and u.max() == 1 and u.dtype == np.float32
    assert feat.prepare(np.concatenate([vol, vol])).shape == (2, 16, 16, 16)


def test_extract_concatenates_channels_and_cache_roundtrip(tmp_path):
    model = build(10, seed=0)
    vol = feat.prepare(np.stack([_head(16, 0), _head(16, 1)]))
    f = feat.extract(model, vol)
    assert f.shape == (1024,) and np.isfinite(f).all()
    cache = feat.FeatureCache(tmp_path, "medicalnet10:random:seed0", (16, 16, 16))
    k = cache.key("abc")
    assert cache.get(k) is None
    cache.put(k, f)
    np.testing.assert_array_equal(cache.get(k), f)
    other = feat.FeatureCache(tmp_path, "medicalnet10:deadbeef", (16, 16, 16))
    assert other.key("abc") != k and other.get(other.key("abc")) is None


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(feat.CACHE_ENV, str(tmp_path))
    assert feat.default_cache_dir() == tmp_path
    monkeypatch.delenv(feat.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert feat.default_cache_dir() == tmp_path / "x" / "synthkit"


def test_auc_and_c2st_separates_obvious_difference():
    assert auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    rng = np.random.default_rng(0)
    real = np.stack([_head(16, i)[None] / 130 for i in range(12)])
    fake = np.clip(real + rng.normal(0, 0.3, real.shape), 0, 1).astype(np.float32)
    r1 = c2st(real, fake, seed=0, epochs=15)
    r2 = c2st(real, fake, seed=0, epochs=15)
    assert r1 == r2
    assert r1["auc"] > 0.9 and r1["n_test"] == 12
    with pytest.raises(ValueError):
        c2st(real[:2], fake[:2])
    assert torch.get_rng_state() is not None
