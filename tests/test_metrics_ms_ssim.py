from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.metrics import MultiScaleSSIMMetric

from synthkit.metrics._ms_ssim import MONAI_WEIGHTS, diversity, ms_ssim, resolve_settings


def _pair(shape, seed=0, noise=0.2):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand((2, 1, *shape), generator=g)
    x = torch.nn.functional.avg_pool3d(x, 3, stride=1, padding=1)  # some structure
    y = (x + noise * torch.rand(x.shape, generator=g)).clamp(0, 1)
    return x, y


@pytest.mark.parametrize("shape", [(16, 16, 16), (32, 24, 28)])
def test_matches_monai_at_adapted_settings(shape):
    x, y = _pair(shape)
    s = resolve_settings(shape, data_range=1.0)
    ours = ms_ssim(x, y, data_range=1.0)
    ref = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, kernel_size=s.kernel_size,
                               kernel_sigma=s.sigma, weights=s.weights, reduction="none")(x, y).view(-1)
    torch.testing.assert_close(ours, ref.float(), rtol=1e-4, atol=1e-5)


def test_matches_monai_with_explicit_kernel_11():
    x, y = _pair((48, 48, 48), noise=0.1)
    w = MONAI_WEIGHTS[:3]
    ref = MultiScaleSSIMMetric(spatial_dims=3, kernel_size=11, weights=w, reduction="none")(x, y).view(-1)
    torch.testing.assert_close(ms_ssim(x, y, kernel_size=11, weights=w), ref.float(), rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_matches_monai_with_default_settings_on_large_volume():
    x, y = _pair((176, 176, 176), noise=0.1)
    x, y = x[:1], y[:1]
    ref = MultiScaleSSIMMetric(spatial_dims=3, data_range=1.0, reduction="none")(x, y).view(-1)
    s = resolve_settings((176,) * 3)
    assert s.kernel_size == 11 and s.weights == MONAI_WEIGHTS
    torch.testing.assert_close(ms_ssim(x, y), ref.float(), rtol=1e-4, atol=1e-5)


def test_settings_adapt_to_small_volumes():
    expect = {176: (5, 11), 128: (5, 7), 64: (4, 7), 32: (3, 7), 16: (2, 7)}
    for size, (scales, k) in expect.items():
        s = resolve_settings((size,) * 3)
        assert (s.scales, s.kernel_size) == (scales, k)
        assert sum(s.weights) == pytest.approx(1.0 if scales < 5 else sum(MONAI_WEIGHTS))
        assert s.to_dict()["scales"] == scales
        # MONAI accepts these settings at this size (only checks, tiny compute at 16/32)
        if size <= 32:
            x = torch.rand(1, 1, size, size, size)
            MultiScaleSSIMMetric(spatial_dims=3, kernel_size=k, weights=s.weights)(x, x)
    with pytest.raises(ValueError):
        resolve_settings((64,) * 3, kernel_size=11, weights=MONAI_WEIGHTS)


def test_identity_is_one_and_symmetric():
    x, y = _pair((16, 16, 16), seed=3)
    torch.testing.assert_close(ms_ssim(x, x), torch.ones(2))
    torch.testing.assert_close(ms_ssim(x, y), ms_ssim(y, x))
    assert (ms_ssim(x, y) < 1).all()


def test_diversity_is_seeded_and_ranks_sets():
    g = torch.Generator().manual_seed(0)
    base = torch.rand(1, 16, 16, 16, generator=g)
    similar = [(base + 0.05 * torch.rand(base.shape, generator=g)).clamp(0, 1) for _ in range(6)]
    varied = [torch.rand(1, 16, 16, 16, generator=g) for _ in range(6)]
    v1, s = diversity(similar, n_pairs=10, seed=1)
    v2, _ = diversity(similar, n_pairs=10, seed=1)
    assert np.array_equal(v1, v2) and len(v1) == 10
    assert s.scales == 2
    v3, _ = diversity(varied, n_pairs=10, seed=1)
    assert v1.mean() > v3.mean()
    with pytest.raises(ValueError):
        diversity(similar[:1])
