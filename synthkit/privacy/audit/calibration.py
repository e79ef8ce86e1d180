"""The copy-flag rule, calibrated on real data rather than a fixed number.

Reference statistics come from *real* volumes that were not trained on: for every holdout
volume, its nearest training volume (holdout-to-train); without a holdout set, every
training volume's nearest *other* training volume (train-to-train, leave-one-out). A
synthetic volume that is no closer to the training set than a fresh real scan is should
look like a draw from that reference distribution.

Each statistic has a direction and a transform to a roughly normal scale
(:data:`STATISTICS`): correlations (``similarity``, ``identity``) are suspicious when high
(Fisher z = atanh), the head-shape Dice when high (logit), the nearest/second-nearest distance
ratio and the feature distance when low (log).

**One false-positive rate for the whole run.** ``alpha`` (default 0.05) is set once for the
run and shared equally (Bonferroni, valid whatever the dependence) over the ``k`` active
statistics and the ``n_synthetic`` volumes (:func:`calibrate_rule`): with ``family="run"`` (the
check's default) the chance that *any* volume of a run without copies is flagged is at most
``alpha`` (each test at ``alpha / (n * k)``); with ``family="volume"`` each volume that is not a
copy is flagged with probability at most ``alpha`` (each test at ``alpha / k``; about
``alpha * n`` of ``n`` such volumes are flagged). A bound is then the more extreme of

* the **normal prediction bound** ``centre +/- t_{n-1}(1 - a) * scale * sqrt(1 + 1/n)`` for one
  new value (centre = median; scale = Rousseeuw & Croux's Qn, a robust scale with 82% Gaussian
  efficiency, so one duplicate scan among the references does not inflate it; the sample
  standard deviation when n < 10, where robust scales are too unstable); for normal reference
  values its false-positive rate is ``a`` on average over reference samples, and
* the **rank bound**: the most extreme reference value. A volume is only flagged when it is
  closer to its nearest training subject than *every* real unseen subject is to its own
  (rank 1 of n + 1), so a fitted tail can never flag a value the reference itself reached.

**Uncertainty.** With few reference values the fitted centre and scale are uncertain, and so
is the false-positive rate the bound really has. :func:`realised_rate` gives it by a
parametric bootstrap (normal on the transformed scale, the same estimators, a fixed seed):
the 5%, 50% and 95% points and the mean of the per-test rate, recorded with every bound
(``rate_interval``). With 8 references and a per-test rate of 1e-3 the realised rate spans
an order of magnitude either way; the report states it.

Below :data:`MIN_PROMISE` reference values nothing can be promised: the check
(:mod:`synthkit.privacy.audit.check`) then uses :func:`fixed_rule` (near-verbatim copies only) and
says so. Nothing here moves a bound toward known copies (see :mod:`synthkit.privacy.audit.planted`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Direction = Literal["above", "below"]
Family = Literal["volume", "run"]
Transform = Literal["fisher_z", "log", "logit"]

#: statistic -> (direction that is suspicious, transform to a roughly normal scale)
STATISTICS: dict[str, tuple[Direction, Transform]] = {
    "similarity": ("above", "fisher_z"),
    "identity": ("above", "fisher_z"),
    "ratio": ("below", "log"),
    "shape_dice": ("above", "logit"),
    "feature_distance": ("below", "log"),
}

MIN_REFERENCE = 3
#: Fewer reference values than this: no false-positive rate can be promised (see :func:`fixed_rule`).
MIN_PROMISE = 5
#: The uncalibrated rule below MIN_PROMISE: values no two different people reach in practice.
FIXED_BOUNDS: dict[str, float] = {"similarity": 0.98, "identity": 0.9}
DEFAULT_ALPHA = 0.05


@dataclass(frozen=True)
class Threshold:
    """One calibrated bound. ``value`` is on the statistic's own scale."""

    statistic: str
    direction: Direction
    value: float
    alpha: float
    transform: Transform
    centre: float
    scale: float
    n_reference: int
    reference: str
    reference_min: float
    reference_median: float
    reference_max: float
    reference_flagged: int
    note: str = ""
    normal_bound: float = float("nan")
    rank_bound: float = float("nan")
    rate_interval: tuple[float, float, float, float] | None = None  # realised per-test rate: 5%, 50%, 95%, mean

    def crosses(self, x: float | np.ndarray) -> np.ndarray:
        """True where ``x`` is beyond the bound (NaN never crosses)."""
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return (x > self.value) if self.direction == "above" else (x < self.value)

    def to_dict(self) -> dict[str, Any]:
        out = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}
        if self.rate_interval is not None:
            out["rate_interval"] = dict(zip(("q05", "median", "q95", "mean"), self.rate_interval, strict=True))
        return out


def _forward(x: np.ndarray, transform: Transform) -> np.ndarray:
    if transform == "fisher_z":
        return np.arctanh(np.clip(x, -1 + 1e-9, 1 - 1e-9))
    if transform == "logit":
        p = np.clip(x, 1e-9, 1 - 1e-9)
        return np.log(p / (1 - p))
    return np.log(np.maximum(x, 1e-12))


def _inverse(z: float, transform: Transform) -> float:
    if transform == "fisher_z":
        return float(np.tanh(z))
    if transform == "logit":
        return float(1 / (1 + np.exp(-z)))
    return float(np.exp(z))


def _centre_scale(z: np.ndarray) -> tuple[float, float]:
    """Median and Qn scale (sample s.d. below 10 values) of transformed reference values."""
    centre = float(np.median(z))
    scale = qn_scale(z) if z.size >= 10 else float(np.std(z, ddof=1))
    if not scale > 0:  # identical reference values: fall back to the spread of the sample
        scale = max(float(np.std(z, ddof=1)), 1e-6)
    return centre, scale


def calibrate(
    reference: np.ndarray,
    *,
    statistic: str,
    direction: Direction,
    transform: Transform,
    alpha: float = 1e-3,
    reference_name: str = "holdout-to-train",
) -> Threshold:
    """The bound one new value crosses with probability about ``alpha`` (per test) if it is
    drawn like ``reference``: the more extreme of the normal bound and the most extreme
    reference value (see the module text), with the bootstrap interval of its realised rate.

    ``reference`` (n,) holds finite reference values (NaNs are dropped). Raises ``ValueError``
    with fewer than 3 values or ``alpha`` outside (0, 0.5).
    """
    from scipy import stats

    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    ref = np.asarray(reference, dtype=np.float64).ravel()
    ref = ref[np.isfinite(ref)]
    n = ref.size
    if n < MIN_REFERENCE:
        raise ValueError(f"calibrating {statistic} needs at least {MIN_REFERENCE} reference values, got {n}")
    z = _forward(ref, transform)
    centre, scale = _centre_scale(z)
    k = float(stats.t.isf(alpha, df=n - 1)) * math.sqrt(1 + 1 / n)
    above = direction == "above"
    normal_z = centre + k * scale if above else centre - k * scale
    rank_z = float(z.max() if above else z.min())
    bound_z = max(normal_z, rank_z) if above else min(normal_z, rank_z)
    th = Threshold(
        statistic=statistic,
        direction=direction,
        value=_inverse(bound_z, transform),
        alpha=alpha,
        transform=transform,
        centre=_inverse(centre, transform),
        scale=scale,
        n_reference=n,
        reference=reference_name,
        reference_min=float(ref.min()),
        reference_median=float(np.median(ref)),
        reference_max=float(ref.max()),
        reference_flagged=0,
        normal_bound=_inverse(normal_z, transform),
        rank_bound=_inverse(rank_z, transform),
        rate_interval=realised_rate(n, alpha),
    )
    flagged = int(th.crosses(ref).sum())
    return Threshold(**{**asdict(th), "reference_flagged": flagged})


def realised_rate(n: int, alpha: float, *, draws: int | None = None, seed: int = 0) -> tuple[float, float, float, float]:
    """The false-positive rate a bound fitted to ``n`` reference values at nominal per-test
    ``alpha`` really has: 5%, 50%, 95% points and mean over reference samples drawn from a
    normal (parametric bootstrap with :func:`calibrate`'s estimators and rank bound)."""
    from scipy import stats

    draws = draws or (2000 if n <= 40 else 400)
    x = np.random.default_rng([seed, n]).normal(size=(draws, n))
    centre = np.median(x, axis=1)
    if n >= 10:
        scale = np.array([qn_scale(row) for row in x]) if n > 40 else _qn_rows(x)
    else:
        scale = x.std(axis=1, ddof=1)
    k = float(stats.t.isf(alpha, df=n - 1)) * np.sqrt(1 + 1 / n)
    bound = np.maximum(centre + k * scale, x.max(axis=1))
    rate = stats.norm.sf(bound)
    q05, q50, q95 = (float(v) for v in np.quantile(rate, [0.05, 0.5, 0.95]))
    return q05, q50, q95, float(rate.mean())


def _qn_rows(x: np.ndarray) -> np.ndarray:
    """:func:`qn_scale` of every row of ``x`` (B, n), n >= 2."""
    n = x.shape[1]
    iu = np.triu_indices(n, 1)
    d = np.abs(x[:, :, None] - x[:, None, :])[:, iu[0], iu[1]]
    h = n // 2 + 1
    k = h * (h - 1) // 2
    q = np.partition(d, k - 1, axis=1)[:, k - 1]
    return 2.2219 * q * _qn_factor(n)


def _qn_factor(n: int) -> float:
    small = {2: 0.399, 3: 0.994, 4: 0.512, 5: 0.844, 6: 0.611, 7: 0.857, 8: 0.669, 9: 0.872}
    return small.get(n, n / (n + 1.4) if n % 2 else n / (n + 3.8))


def qn_scale(x: np.ndarray) -> float:
    """Rousseeuw & Croux (1993) Qn scale: 2.2219 * the k-th smallest pairwise distance
    |x_i - x_j| (i < j), k = C(h, 2), h = n // 2 + 1, with their small-sample factor; consistent
    for the standard deviation of normal data."""
    x = np.asarray(x, dtype=np.float64).ravel()
    n = x.size
    if n < 2:
        return 0.0
    d = np.abs(x[:, None] - x[None, :])[np.triu_indices(n, 1)]
    h = n // 2 + 1
    k = h * (h - 1) // 2
    q = float(np.partition(d, k - 1)[k - 1])
    return 2.2219 * q * _qn_factor(n)


@dataclass(frozen=True)
class Rule:
    """The active bounds, one per statistic. A volume is flagged when any of them is crossed.
    ``alpha``: the run-wide false-positive rate shared over ``n_synthetic`` volumes and the
    bounds; ``calibrated`` False: fixed near-verbatim bounds (:func:`fixed_rule`), no rate promised."""

    bounds: tuple[Threshold, ...]
    alpha: float = DEFAULT_ALPHA
    n_synthetic: int = 1
    family: Family = "run"
    calibrated: bool = True
    statement: str = ""

    @property
    def alpha_per_test(self) -> float:
        n = max(1, self.n_synthetic) if self.family == "run" else 1
        return self.alpha / (n * max(1, len(self.bounds)))

    def realised_rates(self) -> dict[str, float] | None:
        """The false-positive rates the bounds really have (union over statistics of their
        bootstrap per-test rates): per volume (mean and 95% point) and for the whole run of
        ``n_synthetic`` volumes (expected count of fresh volumes flagged, and the chance of any)."""
        if not self.calibrated or not all(t.rate_interval for t in self.bounds):
            return None
        n = max(1, self.n_synthetic)
        mean = min(1.0, sum(t.rate_interval[3] for t in self.bounds))
        q95 = min(1.0, sum(t.rate_interval[2] for t in self.bounds))
        return {"per_volume_mean": mean, "per_volume_q95": q95, "expected_flagged": n * mean,
                "run_any_mean": min(1.0, n * mean)}

    def thresholds(self) -> list[Threshold]:
        return list(self.bounds)

    def get(self, statistic: str) -> Threshold | None:
        return next((t for t in self.bounds if t.statistic == statistic), None)

    def apply(self, values: dict[str, np.ndarray | None]) -> tuple[np.ndarray, list[str]]:
        """Flags (N,) bool and a reason per volume ('' when not flagged) for ``values``
        (statistic -> (N,) array; a statistic without a bound, or None, is ignored)."""
        n = len(next(iter(v for v in values.values() if v is not None)))
        flagged = np.zeros(n, dtype=bool)
        reasons: list[list[str]] = [[] for _ in range(n)]
        for th in self.bounds:
            v = values.get(th.statistic)
            if v is None:
                continue
            v = np.asarray(v, dtype=np.float64)
            hit = th.crosses(v)
            flagged |= hit
            sign = ">" if th.direction == "above" else "<"
            for i in np.flatnonzero(hit):
                reasons[i].append(f"{th.statistic} {v[i]:.4f} {sign} {th.value:.4f}")
        return flagged, ["; ".join(r) for r in reasons]

    def to_dict(self) -> dict[str, Any]:
        return {t.statistic: t.to_dict() for t in self.bounds}


def calibrate_rule(reference: dict[str, np.ndarray | None], *, alpha: float = DEFAULT_ALPHA, n_synthetic: int = 1,
                   family: Family = "run", reference_name: str = "holdout-to-train") -> Rule:
    """One bound per statistic of :data:`STATISTICS` in ``reference`` (name -> (n,) reference
    values) with at least 3 finite values (``None`` leaves a statistic out), each at the
    per-test rate ``alpha / k`` (``family="volume"``) or ``alpha / (n_synthetic * k)``
    (``family="run"``), k = the number of bounds; see the module text."""
    if not 0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 0.5), got {alpha}")
    usable = {}
    for name, values in reference.items():
        if values is None:
            continue
        if name not in STATISTICS:
            raise ValueError(f"unknown statistic {name!r}; known: {', '.join(STATISTICS)}")
        if np.isfinite(np.asarray(values, dtype=float)).sum() >= MIN_REFERENCE:
            usable[name] = values
    if not usable:
        raise ValueError(f"no statistic has {MIN_REFERENCE} or more reference values to calibrate on")
    if family not in ("volume", "run"):
        raise ValueError(f"family must be 'volume' or 'run', got {family!r}")
    per_test = alpha / ((max(1, n_synthetic) if family == "run" else 1) * len(usable))
    bounds = []
    for name, values in usable.items():
        direction, transform = STATISTICS[name]
        bounds.append(calibrate(values, statistic=name, direction=direction, transform=transform, alpha=per_test,
                                reference_name=reference_name))
    return Rule(tuple(bounds), alpha=alpha, n_synthetic=max(1, n_synthetic), family=family)


def fixed_rule(statistics: list[str], n_reference: int, reference_name: str, *, alpha: float = DEFAULT_ALPHA,
               n_synthetic: int = 1) -> Rule:
    """The rule below :data:`MIN_PROMISE` reference values: only near-verbatim copies
    (:data:`FIXED_BOUNDS` of the active ``statistics``) are flagged, and no false-positive rate
    is promised; ``statement`` says so in one line for the report and the terminal."""
    bounds = []
    for name in statistics:
        if name not in FIXED_BOUNDS:
            continue
        direction, transform = STATISTICS[name]
        v = FIXED_BOUNDS[name]
        bounds.append(Threshold(statistic=name, direction=direction, value=v, alpha=float("nan"), transform=transform,
                                centre=float("nan"), scale=float("nan"), n_reference=n_reference,
                                reference=reference_name, reference_min=float("nan"),
                                reference_median=float("nan"), reference_max=float("nan"), reference_flagged=0,
                                note="fixed near-verbatim bound, not calibrated"))
    statement = (f"only {n_reference} reference subject(s) ({reference_name}): too few to promise any false-positive "
                 f"rate (needs {MIN_PROMISE}); only near-verbatim copies are flagged ("
                 + ", ".join(f"{b.statistic} > {b.value:g}" for b in bounds)
                 + "); closer copies may pass: give --holdout with "
                 f"{MIN_PROMISE} or more real cases not trained on")
    return Rule(tuple(bounds), alpha=alpha, n_synthetic=max(1, n_synthetic), calibrated=False, statement=statement)


def plant_copy(
    volume: np.ndarray,
    rng: np.random.Generator,
    *,
    noise: float = 0.1,
    shift: tuple[int, int, int] = (0, 0, 0),
    flip: bool = False,
) -> np.ndarray:
    """A near-copy of ``volume`` (C, D, H, W): mirrored left-right (axis D, RAS order) if
    ``flip``, shifted by whole voxels (``np.roll``), plus Gaussian noise of ``noise`` times
    the volume's standard deviation. Used to check that the rule catches copies."""
    v = np.asarray(volume, dtype=np.float32)
    out = v[:, ::-1] if flip else v
    out = np.roll(out, shift, axis=(1, 2, 3))
    sd = float(v.std()) or 1.0
    return (out + rng.normal(0.0, noise * sd, size=out.shape)).astype(np.float32)
