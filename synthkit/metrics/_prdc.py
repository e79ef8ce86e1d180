"""Precision, recall, density and coverage of a generated feature cloud (Naeem, Oh, Uh, Choi &
Yoo, "Reliable Fidelity and Diversity Metrics for Generative Models", ICML 2020).

With real features ``X (N, F)``, fake features ``Y (M, F)``, Euclidean distance ``d`` and
``r_k(x)`` the distance from a sample to its k-th nearest neighbour *within its own set* (itself
excluded):

    precision = 1/M  sum_j  1[ exists i: d(Y_j, X_i) <= r_k(X_i) ]   (fakes on the real manifold)
    recall    = 1/N  sum_i  1[ exists j: d(X_i, Y_j) <= r_k(Y_j) ]   (reals on the fake manifold)
    density   = 1/(kM) sum_j sum_i 1[ d(Y_j, X_i) <= r_k(X_i) ]      (how many real balls, / k)
    coverage  = 1/N  sum_i  1[ min_j d(X_i, Y_j) <= r_k(X_i) ]       (real balls with a fake)

Properties the tests hold: identical sets give precision = recall = coverage = 1 and density
``(k + 1) / k`` (each point lies in its own ball and in those of its k neighbours; for two
*independent* samples of one distribution the expected density is 1); far-apart sets give 0;
``precision(X, Y) == recall(Y, X)``. Distances are exact pairwise Euclidean distances in
float64 (:func:`scipy.spatial.distance.cdist`).

:func:`prdc_on_rows` scores a bootstrap resample given as row indices into precomputed distance
matrices; each item's radius is then taken among the *distinct* items of the resample (a
duplicated item is not its own neighbour), so resampling does not shrink the balls to 0.
"""

from __future__ import annotations

import numpy as np

__all__ = ["DEFAULT_K", "distances", "prdc", "prdc_on_rows"]

DEFAULT_K = 5


def _check(x: np.ndarray, name: str, k: int) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (N, F) features, got shape {arr.shape}")
    if arr.shape[0] <= k:
        raise ValueError(f"{name} needs more than k={k} samples, got {arr.shape[0]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def distances(real: np.ndarray, fake: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(d_rr (N, N), d_ff (M, M), d_rf (N, M))`` exact Euclidean distances, float64."""
    from scipy.spatial.distance import cdist

    r, f = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    return cdist(r, r), cdist(f, f), cdist(r, f)


def _radii(d_within: np.ndarray, rows: np.ndarray, k: int) -> np.ndarray:
    """k-NN radius of every position in ``rows``, among the distinct items of ``rows``."""
    items, inverse = np.unique(rows, return_inverse=True)
    if len(items) <= k:
        raise ValueError(f"need more than k={k} distinct samples, got {len(items)}")
    sub = d_within[np.ix_(items, items)].copy()
    np.fill_diagonal(sub, np.inf)
    kth = np.partition(sub, k - 1, axis=1)[:, k - 1]
    return kth[inverse]


def prdc_on_rows(d_rr: np.ndarray, d_ff: np.ndarray, d_rf: np.ndarray, ia: np.ndarray, ib: np.ndarray,
                 k: int = DEFAULT_K) -> dict[str, float]:
    """PRDC of the real rows ``ia`` against the fake rows ``ib`` (repeats allowed)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    r_real = _radii(d_rr, ia, k)                     # (N',)
    r_fake = _radii(d_ff, ib, k)                     # (M',)
    d = d_rf[np.ix_(ia, ib)]                         # (N', M')
    in_real_ball = d <= r_real[:, None]              # fake j inside real ball i
    in_fake_ball = d <= r_fake[None, :]              # real i inside fake ball j
    return {
        "precision": float(in_real_ball.any(axis=0).mean()),
        "recall": float(in_fake_ball.any(axis=1).mean()),
        "density": float(in_real_ball.sum() / (k * len(ib))),
        "coverage": float((d.min(axis=1) <= r_real).mean()),
    }


def prdc(real: np.ndarray, fake: np.ndarray, k: int = DEFAULT_K) -> dict[str, float]:
    """Precision, recall, density, coverage of ``fake (M, F)`` against ``real (N, F)``.

    Raises:
        ValueError: not 2-D, different feature sizes, ``N <= k`` or ``M <= k``, non-finite.
    """
    r, f = _check(real, "real", k), _check(fake, "fake", k)
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature dimensions differ: {r.shape[1]} vs {f.shape[1]}")
    d_rr, d_ff, d_rf = distances(r, f)
    return prdc_on_rows(d_rr, d_ff, d_rf, np.arange(len(r)), np.arange(len(f)), k)
