"""Distances that survive shifts and flips; nearest neighbours; SSIM; feature distances."""

from __future__ import annotations

import numpy as np
import pytest
from phantoms import phantom

from synthkit.privacy.audit import memorization as mem


def _prep(seed: int, size: int = 16) -> np.ndarray:
    img, msk = phantom(size, seed=seed)
    return mem.prepare(img.data, img.affine, msk.data, shape=(size,) * 3)


def test_prepare_standardises_inside_head_and_zeroes_outside():
    img, msk = phantom(16, seed=1)
    p = mem.prepare(img.data, img.affine, msk.data, shape=(16, 16, 16))
    assert p.shape == (1, 16, 16, 16) and p.dtype == np.float32
    inside = p[0][p[0] != 0]
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-3
    assert p[0, 0, 0, 0] == 0  # corner is background


def test_prepare_reorients_to_ras():
    img, _ = phantom(16, seed=2)
    flipped_storage = img.data[:, ::-1].copy()  # same world image, stored L->R
    aff = img.affine.copy()
    aff[:3, 0] *= -1
    aff[:3, 3] = img.affine[:3, :3] @ np.array([15, 0, 0]) + img.affine[:3, 3]
    a = mem.prepare(img.data, img.affine, shape=(16,) * 3)
    b = mem.prepare(flipped_storage, aff, shape=(16,) * 3)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_prepare_rejects_empty_image():
    with pytest.raises(ValueError, match="head"):
        mem.prepare(np.zeros((1, 8, 8, 8), np.float32), shape=(8, 8, 8))


def test_shift_volumes_zero_fills():
    import torch

    x = torch.arange(27, dtype=torch.float32).reshape(1, 1, 3, 3, 3)
    y = mem.shift_volumes(x, (1, 0, 0))
    assert torch.equal(y[0, 0, 1:], x[0, 0, :2]) and torch.all(y[0, 0, 0] == 0)
    assert torch.all(mem.shift_volumes(x, (3, 0, 0)) == 0)


def test_pairwise_finds_shift_and_flip():
    a = _prep(3)
    shifted = mem.align(a, (1, -2, 0), False)  # a moved by (1, -2, 0)
    mirrored = a[:, ::-1].copy()
    other = _prep(4)
    refs = np.stack([other, a])
    al = mem.pairwise_similarity(np.stack([a, shifted, mirrored]), refs, max_shift=2)
    nn = mem.nearest_neighbours(al)
    assert list(nn.nearest) == [1, 1, 1]
    assert nn.similarity[0] == pytest.approx(1.0, abs=1e-6)
    assert nn.similarity[1] > 0.95 and tuple(nn.shift[1]) == (1, -2, 0) and not nn.flipped[1]
    assert nn.similarity[2] == pytest.approx(1.0, abs=1e-6) and nn.flipped[2]
    # without flips the mirrored copy is no longer a near-perfect match
    no_flip = mem.pairwise_similarity(mirrored[None], refs, max_shift=2, flips=False)
    assert no_flip.similarity.max() < nn.similarity[2] - 0.01


def test_pairwise_exclude_self_and_bad_shapes():
    x = np.stack([_prep(s) for s in range(3)])
    al = mem.pairwise_similarity(x, x, max_shift=0, exclude_self=True)
    assert np.all(np.isneginf(np.diag(al.similarity)))
    assert np.all(np.isfinite(al.similarity[~np.eye(3, dtype=bool)]))
    with pytest.raises(ValueError):
        mem.pairwise_similarity(x, x[:, :, :8], max_shift=0)
    with pytest.raises(ValueError):
        mem.pairwise_similarity(x[:2], x, exclude_self=True)


def test_nearest_neighbours_ratio():
    sim = np.array([[0.9, 0.5, 0.1], [0.2, 0.3, 0.25]])
    al = mem.Alignment(sim, np.zeros((2, 3, 3), int), np.zeros((2, 3), bool))
    nn = mem.nearest_neighbours(al)
    assert list(nn.nearest) == [0, 1] and list(nn.second) == [1, 2]
    assert nn.ratio[0] == pytest.approx(0.1 / 0.5)
    single = mem.nearest_neighbours(mem.Alignment(sim[:, :1], np.zeros((2, 1, 3), int), np.zeros((2, 1), bool)))
    assert np.isnan(single.ratio).all()


def test_feature_distances_min_over_variants():
    q = np.array([[1.0, 0.0], [0.0, 1.0]])
    r = np.array([[[0.0, 1.0], [1.0, 0.0]], [[-1.0, 0.0], [-1.0, 0.1]]])  # (R=2, K=2, F=2)
    d = mem.feature_distances(q, r)
    assert d.shape == (2, 2)
    assert d[0, 0] == pytest.approx(0.0) and d[1, 0] == pytest.approx(0.0)
    assert d[0, 1] > 1.5
    with pytest.raises(ValueError):
        mem.feature_distances(q, np.zeros((2, 3)))


def test_ssim_identical_and_different():
    a, b = _prep(5), _prep(6)
    assert mem.ssim(a, a) == pytest.approx(1.0)
    assert mem.ssim(a, b) < 0.95
    assert mem.ssim(a, b) == pytest.approx(mem.ssim(b, a))
