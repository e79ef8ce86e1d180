"""Uncertainty for set-level and per-item metrics.

* :func:`bootstrap` — resample both sets with replacement ``n_boot`` times and recompute a set
  metric (FID, MMD); report the mean +- std of the replicates (the paper's "value +- std" style)
  and the 2.5/97.5 percentile interval. Note that bootstrap replicates of FID are biased upwards
  (duplicated samples shrink covariance rank); the point value is always the full-set value.
* :func:`bootstrap_rows` — the same resampling for a metric of row indices that returns several
  named values at once (precision / recall / density / coverage from one distance matrix).
* :func:`mean_interval` — per-item values (MSE, MS-SSIM): mean +- std over items and a
  percentile bootstrap 95% CI of the mean.
* :func:`split_half_floor` — real-vs-real FID of random halves of the real set: what FID a
  perfect generator would get at this sample size (N/2 vs N/2). Synthetic-vs-real values should be
  read relative to it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Interval", "bootstrap", "bootstrap_rows", "mean_interval", "median_interval", "split_half_floor"]


@dataclass(frozen=True)
class Interval:
    """A metric value with its spread: ``value`` (point estimate), ``mean``/``std`` of the
    bootstrap replicates or items, ``ci95`` = (low, high), ``n`` = replicates or items."""

    value: float
    mean: float
    std: float
    ci95: tuple[float, float]
    n: int
    method: str

    def to_dict(self) -> dict:
        """JSON-ready; a value that could not be computed (NaN) becomes None."""
        d = asdict(self)
        d["ci95"] = [_finite_or_none(c) for c in self.ci95]
        for key in ("value", "mean", "std"):
            d[key] = _finite_or_none(d[key])
        return d

    def fmt(self, digits: int = 4) -> str:
        return f"{self.value:.{digits}f}±{self.std:.{digits}f}"


def _finite_or_none(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def _summary(value: float, reps: np.ndarray, method: str) -> Interval:
    reps = reps[np.isfinite(reps)]
    if reps.size == 0:
        return Interval(float(value), float("nan"), float("nan"), (float("nan"),) * 2, 0, method)
    lo, hi = np.percentile(reps, [2.5, 97.5])
    std = float(reps.std(ddof=1)) if reps.size > 1 else 0.0
    return Interval(float(value), float(reps.mean()), std, (float(lo), float(hi)), int(reps.size), method)


def bootstrap(
    metric: Callable[[np.ndarray, np.ndarray], float],
    a: np.ndarray,
    b: np.ndarray,
    n_boot: int = 100,
    seed: int = 0,
) -> Interval:
    """Point value ``metric(a, b)`` and its two-sample bootstrap spread (rows resampled)."""
    a, b = np.asarray(a), np.asarray(b)
    rng = np.random.default_rng(seed)
    value = metric(a, b)
    reps = np.empty(n_boot)
    for i in range(n_boot):
        ia = rng.integers(0, len(a), len(a))
        ib = rng.integers(0, len(b), len(b))
        try:
            reps[i] = metric(a[ia], b[ib])
        except ValueError:
            reps[i] = np.nan
    return _summary(value, reps, f"bootstrap({n_boot}) over both sets")


def bootstrap_rows(
    metric: Callable[[np.ndarray, np.ndarray], Mapping[str, float]],
    n_a: int,
    n_b: int,
    n_boot: int = 100,
    seed: int = 0,
) -> dict[str, Interval]:
    """Bootstrap of a metric given as row indices: ``metric(ia, ib) -> {name: value}`` where
    ``ia`` indexes ``n_a`` rows of the first set and ``ib`` ``n_b`` rows of the second (with
    repeats in replicates). The point values use every row once. A replicate the metric rejects
    (``ValueError``, e.g. too few distinct rows) counts as missing (``n`` says how many ran)."""
    rng = np.random.default_rng(seed)
    value = dict(metric(np.arange(n_a), np.arange(n_b)))
    reps = {name: np.full(n_boot, np.nan) for name in value}
    for i in range(n_boot):
        ia, ib = rng.integers(0, n_a, n_a), rng.integers(0, n_b, n_b)
        try:
            out = metric(ia, ib)
        except ValueError:
            continue
        for name in value:
            reps[name][i] = out[name]
    method = f"bootstrap({n_boot}) over both sets"
    return {name: _summary(v, reps[name], method) for name, v in value.items()}


def mean_interval(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> Interval:
    """Mean of per-item values, std over items, bootstrap 95% CI of the mean."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("no values to summarise")
    rng = np.random.default_rng(seed)
    means = v[rng.integers(0, v.size, (n_boot, v.size))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return Interval(float(v.mean()), float(v.mean()), std, (float(lo), float(hi)), int(v.size),
                    f"mean±std over items; bootstrap({n_boot}) CI of the mean")


def median_interval(values: np.ndarray, n_boot: int = 1000, seed: int = 0) -> Interval:
    """Median of per-item values (robust to a few odd cases), std over items, bootstrap 95% CI
    of the median. NaN items (nothing to measure in that case) are left out."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if v.size == 0:
        raise ValueError("no values to summarise")
    rng = np.random.default_rng(seed)
    meds = np.median(v[rng.integers(0, v.size, (n_boot, v.size))], axis=1)
    lo, hi = np.percentile(meds, [2.5, 97.5])
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return Interval(float(np.median(v)), float(v.mean()), std, (float(lo), float(hi)), int(v.size),
                    f"median over items (mean, std over items); bootstrap({n_boot}) CI of the median")


def split_half_floor(
    metric: Callable[[np.ndarray, np.ndarray], float], real: np.ndarray, repeats: int = 10, seed: int = 0
) -> Interval:
    """Metric between random disjoint halves of ``real`` (N//2 each), ``repeats`` times."""
    real = np.asarray(real)
    if len(real) < 4:
        raise ValueError(f"split-half floor needs at least 4 real samples, got {len(real)}")
    rng = np.random.default_rng(seed)
    h = len(real) // 2
    reps = []
    for _ in range(repeats):
        perm = rng.permutation(len(real))
        reps.append(metric(real[perm[:h]], real[perm[h : 2 * h]]))
    arr = np.asarray(reps, dtype=np.float64)
    s = _summary(float(arr.mean()), arr, f"real-vs-real split halves ({h} vs {h}) x{repeats}")
    return s
