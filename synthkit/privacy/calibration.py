"""The copy-flag rule, calibrated on real data rather than a fixed number.

Reference statistics come from *real* volumes that were not trained on: for every holdout
volume, its nearest training volume (holdout-to-train); without a holdout set, every
training volume's nearest *other* training volume (train-to-train, leave-one-out). A
synthetic volume that is no closer to the training set than a fresh real scan is should
look like a draw from that reference distribution.

Each statistic has a direction and a transform to a roughly normal scale
(:data:`STATISTICS`): correlations (``similarity``, ``identity``) are suspicious when high
(Fisher z = atanh), the head-shape Dice when high (logit), the nearest/second-nearest distance
ratio and the feature distance when low (log). The threshold is the one-sided normal
*prediction bound* for one new value at false-positive rate ``alpha`` (default 1e-4 per
statistic; nearest-neighbour values are maxima, whose upper tail is heavier than a normal fit
on a few reference values suggests, so the nominal rate is set low):

    bound = centre +/- t_{n-1}(1 - alpha) * scale * sqrt(1 + 1/n)

with centre = median and scale = Rousseeuw & Croux's Qn (a robust scale estimator with 82%
Gaussian efficiency, so a duplicate scan among the references does not inflate the bound; the
sample standard deviation when n < 10, where robust scales are too unstable). A synthetic
volume is flagged when any active statistic crosses its bound.

The bound depends on the reference values only. With few of them the t quantile makes it wide
(n = 5, alpha = 1e-4: 14 standard deviations) and copies may pass: the planted-copy self-test
(:mod:`synthkit.privacy.planted`) measures that and says so; nothing here moves a bound
toward known copies.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np

Direction = Literal["above", "below"]
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

    def crosses(self, x: float | np.ndarray) -> np.ndarray:
        """True where ``x`` is beyond the bound (NaN never crosses)."""
        x = np.asarray(x, dtype=np.float64)
        with np.errstate(invalid="ignore"):
            return (x > self.value) if self.direction == "above" else (x < self.value)

    def to_dict(self) -> dict[str, Any]:
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


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


def calibrate(
    reference: np.ndarray,
    *,
    statistic: str,
    direction: Direction,
    transform: Transform,
    alpha: float = 1e-4,
    reference_name: str = "holdout-to-train",
) -> Threshold:
    """The bound a new value crosses with probability ~``alpha`` if it is drawn like ``reference``.

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
    centre = float(np.median(z))
    if n >= 10:
        scale = qn_scale(z)
    else:
        scale = float(np.std(z, ddof=1))
    if not scale > 0:  # identical reference values: fall back to the spread of the sample
        scale = max(float(np.std(z, ddof=1)), 1e-6)
    k = float(stats.t.ppf(1 - alpha, df=n - 1)) * math.sqrt(1 + 1 / n)
    bound_z = centre + k * scale if direction == "above" else centre - k * scale
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
    )
    flagged = int(th.crosses(ref).sum())
    return Threshold(**{**asdict(th), "reference_flagged": flagged})


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
    small = {2: 0.399, 3: 0.994, 4: 0.512, 5: 0.844, 6: 0.611, 7: 0.857, 8: 0.669, 9: 0.872}
    factor = small.get(n, n / (n + 1.4) if n % 2 else n / (n + 3.8))
    return 2.2219 * q * factor


@dataclass(frozen=True)
class Rule:
    """The active bounds, one per statistic. A volume is flagged when any of them is crossed."""

    bounds: tuple[Threshold, ...]

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


def calibrate_rule(reference: dict[str, np.ndarray | None], *, alpha: float = 1e-4,
                   reference_name: str = "holdout-to-train") -> Rule:
    """One bound per statistic of :data:`STATISTICS` in ``reference`` (name -> (n,) reference
    values) with at least 3 finite values; ``None`` leaves a statistic out."""
    bounds = []
    for name, values in reference.items():
        if values is None:
            continue
        if name not in STATISTICS:
            raise ValueError(f"unknown statistic {name!r}; known: {', '.join(STATISTICS)}")
        if np.isfinite(np.asarray(values, dtype=float)).sum() < MIN_REFERENCE:
            continue
        direction, transform = STATISTICS[name]
        bounds.append(calibrate(values, statistic=name, direction=direction, transform=transform, alpha=alpha,
                                reference_name=reference_name))
    if not bounds:
        raise ValueError(f"no statistic has {MIN_REFERENCE} or more reference values to calibrate on")
    return Rule(tuple(bounds))


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
