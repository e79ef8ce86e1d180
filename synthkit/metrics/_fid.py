"""Fréchet distance between two feature clouds (Heusel et al., "GANs Trained by a Two Time-Scale
Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017), used with MedicalNet features as
the 3D-FID of Med-DDPM (Dorjsembe et al., 2024).

    FID = |mu_a - mu_b|^2 + Tr(S_a) + Tr(S_b) - 2 Tr( (S_a S_b)^{1/2} )

``Tr((S_a S_b)^{1/2})`` is computed as ``Tr((sqrt(S_a) S_b sqrt(S_a))^{1/2})``: the two matrices
are similar, and the second one is symmetric positive semi-definite, so both square roots come from
symmetric eigendecompositions (eigenvalues clipped at 0) instead of a general, possibly complex,
``scipy.linalg.sqrtm``. This is stable when ``N < F`` (singular covariances), the usual case here.

When a set has fewer samples than features (100 volumes vs 512 MedicalNet features), :func:`fid`
does the same computation in sample space: with centred features ``A (N_a, F)``, ``B (N_b, F)``,
``S_a = A^T A / (N_a - 1)``, the nonzero eigenvalues of ``sqrt(S_a) S_b sqrt(S_a)`` equal those
of the small symmetric matrix ``M M^T``, ``M = A B^T / sqrt((N_a - 1)(N_b - 1))``, so
``Tr((S_a S_b)^{1/2}) = sum sqrt(eig(M M^T))`` -- exact, and an ``N x N`` instead of an ``F x F``
eigenproblem. Eigendecompositions use ``torch.linalg`` in float64.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["feature_stats", "fid", "frechet_distance"]


def _as_2d_float64(x: torch.Tensor | np.ndarray, name: str) -> np.ndarray:
    arr = x.detach().cpu().double().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (N, F) features, got shape {arr.shape}")
    if arr.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples for a covariance, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def feature_stats(feats: torch.Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(F,)`` and unbiased covariance ``(F, F)`` (float64) of features ``(N, F)``."""
    arr = _as_2d_float64(feats, "feats")
    return arr.mean(axis=0), np.cov(arr, rowvar=False, ddof=1).reshape(arr.shape[1], arr.shape[1])


def _eigvalsh(s: np.ndarray) -> np.ndarray:
    return torch.linalg.eigvalsh(torch.from_numpy((s + s.T) / 2.0)).numpy()


def _psd_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = torch.linalg.eigh(torch.from_numpy((s + s.T) / 2.0))
    w, v = w.numpy(), v.numpy()
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def _sqrt_trace_sum(eig: np.ndarray) -> float:
    return float(np.sqrt(np.clip(eig, 0.0, None)).sum())


def frechet_distance(mu_a: np.ndarray, cov_a: np.ndarray, mu_b: np.ndarray, cov_b: np.ndarray) -> float:
    """Fréchet distance between Gaussians N(mu_a, cov_a) and N(mu_b, cov_b) (float64)."""
    mu_a, mu_b = np.asarray(mu_a, np.float64), np.asarray(mu_b, np.float64)
    cov_a, cov_b = np.asarray(cov_a, np.float64), np.asarray(cov_b, np.float64)
    if mu_a.shape != mu_b.shape or cov_a.shape != cov_b.shape or cov_a.shape != mu_a.shape * 2:
        raise ValueError(
            f"mismatched statistics: mu {mu_a.shape} vs {mu_b.shape}, cov {cov_a.shape} vs {cov_b.shape}"
        )
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    tr_covmean = _sqrt_trace_sum(_eigvalsh(middle))
    diff = mu_a - mu_b
    value = float(diff @ diff + np.trace(cov_a) + np.trace(cov_b) - 2.0 * tr_covmean)
    return max(value, 0.0)


def fid(feats_a: torch.Tensor | np.ndarray, feats_b: torch.Tensor | np.ndarray) -> float:
    """3D-FID between feature sets ``(N_a, F)`` and ``(N_b, F)``; 0 for identical sets.

    Raises:
        ValueError: not 2-D, fewer than 2 samples, different F, or non-finite values.
    """
    a = _as_2d_float64(feats_a, "feats_a")
    b = _as_2d_float64(feats_b, "feats_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"feature dimensions differ: {a.shape[1]} vs {b.shape[1]}")
    if min(len(a), len(b)) < a.shape[1]:
        return _fid_sample_space(a, b)
    mu_a, cov_a = feature_stats(a)
    mu_b, cov_b = feature_stats(b)
    return frechet_distance(mu_a, cov_a, mu_b, cov_b)


def _fid_sample_space(a: np.ndarray, b: np.ndarray) -> float:
    """Same value as the covariance route, via the ``N x N`` Gram form (module docstring)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    ca, cb = a - mu_a, b - mu_b
    na, nb = len(a) - 1, len(b) - 1
    m = (ca @ cb.T) / np.sqrt(na * nb)
    gram = m @ m.T if m.shape[0] <= m.shape[1] else m.T @ m
    tr_covmean = _sqrt_trace_sum(_eigvalsh(gram))
    diff = mu_a - mu_b
    value = float(diff @ diff + (ca * ca).sum() / na + (cb * cb).sum() / nb - 2.0 * tr_covmean)
    return max(value, 0.0)
