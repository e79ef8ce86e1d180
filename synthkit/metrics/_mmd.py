"""Maximum mean discrepancy (Gretton et al., "A Kernel Two-Sample Test", JMLR 13, 2012).

``mmd(a, b)`` returns the squared MMD between samples ``a (N, F)`` and ``b (M, F)``:

    MMD^2 = E k(a, a') + E k(b, b') - 2 E k(a, b)

* ``kernel="gaussian"``: ``k(x, y) = mean_s exp(-|x - y|^2 / (2 s^2))`` over the bandwidths ``s``.
  With ``bandwidths=None`` the median heuristic picks ``s0`` = median of the pairwise distances of
  the pooled sample, and the kernel averages ``s0 * (0.25, 0.5, 1, 2, 4)`` (multi-bandwidth).
* ``kernel="linear"``: ``k(x, y) = x . y``; then the biased MMD^2 is ``|mean(a) - mean(b)|^2``.
* ``unbiased=True`` (default) drops the diagonal terms of the within-set sums (Gretton's
  MMD^2_u, which can be slightly negative); ``unbiased=False`` is the V-statistic, exactly 0 for
  identical sets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch

__all__ = ["DEFAULT_BANDWIDTH_FACTORS", "gaussian_kernel", "median_bandwidth", "mmd", "mmd_from_kernel"]

DEFAULT_BANDWIDTH_FACTORS: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)


def _check(x: torch.Tensor, name: str) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.ndim != 2:
        raise ValueError(f"{name} must be (N, F), got shape {tuple(x.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {x.shape[0]}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return x.detach().to(torch.float64)


def _sq_dists(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    d = (x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T
    return d.clamp_min(0.0)


def median_bandwidth(a: torch.Tensor, b: torch.Tensor) -> float:
    """Median pairwise Euclidean distance of the pooled sample (off-diagonal pairs)."""
    z = torch.cat([_check(a, "a"), _check(b, "b")])
    d = _sq_dists(z, z)
    iu = torch.triu_indices(len(z), len(z), offset=1)
    med = float(torch.quantile(d[iu[0], iu[1]].sqrt(), 0.5))  # mean of the two middles
    return med if med > 0 else 1.0


def gaussian_kernel(x: torch.Tensor, y: torch.Tensor, bandwidths: Sequence[float]) -> torch.Tensor:
    """``(N, M)`` multi-bandwidth Gaussian kernel ``mean_s exp(-|x - y|^2 / (2 s^2))`` (float64)."""
    bws = [float(s) for s in bandwidths]
    if not bws or any(s <= 0 for s in bws):
        raise ValueError(f"bandwidths must be positive, got {bws}")
    d = _sq_dists(x.to(torch.float64), y.to(torch.float64))
    return sum(torch.exp(-d / (2.0 * s * s)) for s in bws) / len(bws)


def _mmd2(kxx: torch.Tensor, kyy: torch.Tensor, kxy: torch.Tensor, unbiased: bool) -> float:
    """MMD^2 from the within-set blocks ``kxx (n, n)``, ``kyy (m, m)`` and the cross block ``kxy``;
    the unbiased form drops the diagonals of the within-set blocks (Gretton et al. 2012, eq. 3)."""
    n, m = kxx.shape[0], kyy.shape[0]
    if unbiased:
        exx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        eyy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        exx, eyy = kxx.mean(), kyy.mean()
    return float(exx + eyy - 2.0 * kxy.mean())


def mmd_from_kernel(k: torch.Tensor, ia: torch.Tensor, ib: torch.Tensor, unbiased: bool = True) -> float:
    """MMD^2 from a precomputed kernel matrix ``k (P, P)`` of a pooled sample, for the samples at
    rows ``ia`` and ``ib`` (index tensors; repeats allowed, as in a bootstrap). The unbiased form
    drops the diagonal *positions* of the within-set blocks."""
    return _mmd2(k[ia][:, ia], k[ib][:, ib], k[ia][:, ib], unbiased)


def mmd(
    a: torch.Tensor,
    b: torch.Tensor,
    kernel: Literal["gaussian", "linear"] = "gaussian",
    bandwidths: Sequence[float] | None = None,
    unbiased: bool = True,
) -> float:
    """Squared MMD between ``a (N, F)`` and ``b (M, F)`` (float64 maths)."""
    x, y = _check(a, "a"), _check(b, "b")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dimensions differ: {x.shape[1]} vs {y.shape[1]}")
    if kernel == "linear":
        kxx, kyy, kxy = x @ x.T, y @ y.T, x @ y.T
    elif kernel == "gaussian":
        if bandwidths is None:
            s0 = median_bandwidth(x, y)
            bandwidths = [s0 * f for f in DEFAULT_BANDWIDTH_FACTORS]
        kxx, kyy, kxy = (gaussian_kernel(p, q, bandwidths) for p, q in ((x, x), (y, y), (x, y)))
    else:
        raise ValueError(f"kernel must be 'gaussian' or 'linear', got {kernel!r}")
    return _mmd2(kxx, kyy, kxy, unbiased)
