"""The planted-copy self-test: does the calibrated rule catch copies it was not tuned on?

A few training volumes (seeded choice) are copied on the comparison grid the ways a memorising
generator might copy them (:data:`DEFAULT_KINDS`):

* ``shift+noise``: a one-voxel shift along two axes plus noise;
* ``warp+intensity+noise``: a small affine (rotation, scale, translation) and elastic warp, a
  gamma and a smooth multiplicative bias field, plus noise;
* ``mirror+warp+noise``: the same, mirrored left-right (only when flips are searched).

Noise is magnitude (Rician) noise, as MRI has, of ``noise`` times the head's intensity s.d.
Every copy is then scored by the rule exactly as a synthetic volume would be. A copy counts as
*caught* when it is flagged and its nearest training subject is its source. The rule's bounds
come from real reference volumes only; the planted copies never move them. The test reports
the catch rate and **passes** when it reaches ``min_catch_rate``; when it does not, the report
says so (the rule is then too loose to trust, typically because the reference set is small).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PlantKind:
    """How one kind of copy is made. Angles in degrees, lengths in comparison-grid voxels;
    ``scale``, ``gamma`` (log-gamma) and ``bias`` (log-amplitude) are drawn in [-x, x]."""

    name: str
    shift: tuple[int, int, int] = (0, 0, 0)
    flip: bool = False
    rotation_deg: float = 0.0
    scale: float = 0.0
    translation: float = 0.0
    elastic: float = 0.0
    gamma: float = 0.0
    bias: float = 0.0
    noise: float = 0.15


_WARP = {"rotation_deg": 2.0, "scale": 0.02, "translation": 1.0, "elastic": 0.4, "gamma": 0.15, "bias": 0.05}
DEFAULT_KINDS: tuple[PlantKind, ...] = (
    PlantKind("shift+noise", shift=(1, 0, -1)),
    PlantKind("warp+intensity+noise", **_WARP),
    PlantKind("mirror+warp+noise", flip=True, **_WARP),
)


def _rotation(deg: np.ndarray) -> np.ndarray:
    from synthkit.masks.geometry import rotation_matrix

    return rotation_matrix(tuple(float(a) for a in deg))


def _warp(x: np.ndarray, head: np.ndarray, kind: PlantKind, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Affine + elastic warp of (C, D, H, W) intensities and their (D, H, W) head mask."""
    from scipy import ndimage

    from synthkit.masks.geometry import elastic_field

    size = np.asarray(head.shape)
    c = (size - 1) / 2
    a = _rotation(rng.uniform(-kind.rotation_deg, kind.rotation_deg, 3)) * (1 + rng.uniform(-kind.scale, kind.scale))
    grid = np.indices(head.shape, dtype=np.float64)
    if kind.elastic > 0:
        grid = grid + elastic_field(rng.uniform(-kind.elastic, kind.elastic, (3, 4, 4, 4)), tuple(head.shape))
    pts = grid.reshape(3, -1) - c[:, None] - rng.uniform(-kind.translation, kind.translation, 3)[:, None]
    src = np.linalg.inv(a) @ pts + c[:, None]
    out = np.stack([ndimage.map_coordinates(ch, src, order=1, mode="constant", cval=0.0).reshape(head.shape)
                    for ch in x])
    h = ndimage.map_coordinates(head.astype(np.float64), src, order=1, mode="constant").reshape(head.shape) > 0.5
    return out, h


def plant(prepared: np.ndarray, kind: PlantKind, rng: np.random.Generator) -> np.ndarray:
    """One copy of a prepared volume (C, D, H, W) (see :func:`synthkit.privacy.audit.memorization.prepare`),
    prepared again: standardised inside its (moved) head, zero outside."""
    from scipy import ndimage

    head = np.any(prepared != 0, axis=0)
    x = np.asarray(prepared, dtype=np.float64)
    if kind.flip:
        x, head = x[:, ::-1], head[::-1]
    x = np.roll(x, kind.shift, axis=(1, 2, 3))
    head = np.roll(head, kind.shift, axis=(0, 1, 2))
    pos = np.zeros_like(x)  # intensities in [0, 1] inside the head, 0 outside (as an MR image)
    for c in range(x.shape[0]):
        v = x[c][head]
        pos[c][head] = (v - v.min()) / max(float(np.ptp(v)), 1e-12)
    if kind.rotation_deg or kind.scale or kind.translation or kind.elastic:
        pos, head = _warp(pos, head, kind, rng)
    pos = np.clip(pos, 0, None) ** float(np.exp(rng.uniform(-kind.gamma, kind.gamma)))
    if kind.bias > 0:
        field = ndimage.zoom(rng.normal(size=(3, 3, 3)), np.asarray(head.shape) / 3, order=3)
        pos = pos * np.exp(kind.bias * field[None])
    sd = float(pos[:, head].std()) if head.any() else 1.0
    noisy = np.sqrt((pos + rng.normal(0, kind.noise * sd, pos.shape)) ** 2 + rng.normal(0, kind.noise * sd, pos.shape) ** 2)
    out = np.zeros_like(noisy, dtype=np.float32)
    for c in range(noisy.shape[0]):
        v = noisy[c][head]
        out[c][head] = (v - v.mean()) / max(float(v.std()), 1e-12)
    return out


def planted_copies(train: np.ndarray, n_sources: int, kinds: tuple[PlantKind, ...], seed: int, *,
                   flips: bool = True) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """Copies (P, C, D, H, W) of ``n_sources`` training volumes (seeded choice) of every kind
    (mirrored kinds only with ``flips``), and (source index, kind name) of each."""
    rng = np.random.default_rng([seed, 0x5EED])
    n = min(n_sources, len(train))
    pick = np.sort(rng.choice(len(train), size=n, replace=False))
    use = [k for k in kinds if flips or not k.flip]
    arrays, labels = [], []
    for j in pick:
        for kind in use:
            arrays.append(plant(train[j], kind, rng))
            labels.append((int(j), kind.name))
    return np.stack(arrays), labels


def catch_report(records: list[dict[str, Any]], labels: list[tuple[int, str]], train_ids: list[str],
                 kinds: tuple[PlantKind, ...], min_catch_rate: float) -> dict[str, Any]:
    """The self-test's record: counts per kind, the catch rate, pass/fail and a one-line verdict."""
    caught = [bool(r["flagged"]) and r["nearest"] == train_ids[j] for r, (j, _) in zip(records, labels, strict=True)]
    by_kind: dict[str, dict[str, int]] = {}
    for (_, name), c in zip(labels, caught, strict=True):
        d = by_kind.setdefault(name, {"caught": 0, "planted": 0})
        d["caught"] += int(c)
        d["planted"] += 1
    rate = sum(caught) / len(caught) if caught else 0.0
    passed = rate >= min_catch_rate
    verdict = (f"planted-copy self-test passed: {sum(caught)} of {len(caught)} copies caught"
               if passed else
               f"planted-copy self-test FAILED: only {sum(caught)} of {len(caught)} copies caught "
               f"(needs {min_catch_rate:.0%}); the flag misses copies at this calibration: add holdout cases")
    return {
        "planted": len(caught), "caught": int(sum(caught)), "catch_rate": rate, "min_catch_rate": min_catch_rate,
        "passed": passed, "verdict": verdict, "by_kind": by_kind,
        "missed": [{"kind": name, "identity": r.get("identity"), "nearest_is_source": r["nearest"] == train_ids[j]}
                   for r, (j, name), c in zip(records, labels, caught, strict=True) if not c],
        "kinds": [asdict(k) for k in kinds],
        "description": "copies of training volumes on the comparison grid (shift+noise; small affine + elastic warp, "
                       "gamma, bias field and noise; the same mirrored), scored by the rule as it stands "
                       "(bounds from real reference volumes only)",
    }
