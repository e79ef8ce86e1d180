"""The memorization check: every synthetic volume against the training set, calibrated on real
data (see :mod:`synthkit.privacy.calibration` for the rule), plus cohort-level scores.

Typical use::

    train = prepare_set(train_items, settings, extractor)
    holdout = prepare_set(holdout_items, settings, extractor)      # optional
    checker = MemorizationChecker(train, holdout, settings, extractor)
    result = checker.run(prepare_set(synth_items, settings, extractor))
    write_json("privacy.json", result.to_dict())
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np

from synthkit.privacy import calibration, memorization, scores


class FeatureExtractor(Protocol):
    """Maps prepared volumes (N, C, D, H, W) float32 to features (N, F). ``name`` is recorded."""

    name: str

    def __call__(self, volumes: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True)
class CheckSettings:
    """How volumes are compared and how the flag is calibrated."""

    shape: tuple[int, int, int] = memorization.DEFAULT_SHAPE
    max_shift: int = 2
    flips: bool = True
    head_threshold: float = 0.05
    alpha: float = 1e-4
    use_ratio: bool = True  # only with a holdout set (train-to-train ratios are under-dispersed)
    use_features: bool = True
    planted_noise: float = 0.2
    planted_max: int = 4
    seed: int = 0


@dataclass
class VolumeSet:
    """Volumes on the comparison grid. prepared: (N, C, D, H, W); features: (N, F) and the
    features of the left-right mirrored volumes (N, F), or None without an extractor."""

    ids: list[str]
    prepared: np.ndarray
    features: np.ndarray | None = None
    features_flipped: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


Item = tuple[str, np.ndarray, "np.ndarray | None", "np.ndarray | None"]  # id, image, affine, labels


def prepare_set(
    items: Iterable[Item],
    settings: CheckSettings,
    extractor: FeatureExtractor | None = None,
    *,
    on_error: Callable[[str, Exception], None] | None = None,
) -> VolumeSet:
    """Prepare (id, image (C, D, H, W), affine or None, labels or None) items. A volume that
    cannot be prepared raises ``ValueError`` unless ``on_error(id, exc)`` is given (then skipped)."""
    ids: list[str] = []
    arrays: list[np.ndarray] = []
    for case_id, image, affine, labels in items:
        try:
            arrays.append(memorization.prepare(image, affine, labels, shape=settings.shape,
                                               head_threshold=settings.head_threshold))
        except ValueError as e:
            if on_error is None:
                raise ValueError(f"{case_id}: {e}") from None
            on_error(case_id, e)
            continue
        ids.append(case_id)
    if arrays and len({a.shape for a in arrays}) != 1:
        raise ValueError("volumes have different channel counts: " + ", ".join(sorted({str(a.shape[0]) for a in arrays})))
    prepared = np.stack(arrays) if arrays else np.zeros((0, 1, *settings.shape), np.float32)
    return with_features(VolumeSet(ids, prepared), extractor if settings.use_features else None)


def with_features(vs: VolumeSet, extractor: FeatureExtractor | None) -> VolumeSet:
    if extractor is None or len(vs) == 0:
        return vs
    feats = np.asarray(extractor(vs.prepared), dtype=np.float64)
    flipped = np.asarray(extractor(np.ascontiguousarray(vs.prepared[:, :, ::-1])), dtype=np.float64)
    return VolumeSet(vs.ids, vs.prepared, feats, flipped)


def _both(vs: VolumeSet) -> np.ndarray | None:
    if vs.features is None or vs.features_flipped is None:
        return None
    return np.stack([vs.features, vs.features_flipped], axis=1)  # (N, 2, F)


@dataclass
class PrivacyResult:
    """Everything ``synthkit privacy`` reports. ``volumes`` has one dict per synthetic volume."""

    volumes: list[dict[str, Any]]
    cohort: dict[str, Any]
    calibration: dict[str, Any]
    settings: dict[str, Any]
    not_computed: list[str] = field(default_factory=list)

    @property
    def flagged(self) -> list[dict[str, Any]]:
        return [v for v in self.volumes if v["flagged"]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "volumes": self.volumes,
            "cohort": self.cohort,
            "calibration": self.calibration,
            "settings": self.settings,
            "not_computed": self.not_computed,
        }


def _f(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


class MemorizationChecker:
    """Reference statistics and the calibrated rule for one training set (and holdout)."""

    def __init__(
        self,
        train: VolumeSet,
        holdout: VolumeSet | None = None,
        settings: CheckSettings | None = None,
        extractor: FeatureExtractor | None = None,
    ):
        self.settings = settings or CheckSettings()
        self.train = train
        self.holdout = holdout if holdout is not None and len(holdout) > 0 else None
        self.extractor = extractor if self.settings.use_features else None
        if len(train) < 2:
            raise ValueError("the memorization check needs at least 2 training volumes")
        s = self.settings
        if self.holdout is not None:
            ref = memorization.pairwise_similarity(self.holdout.prepared, train.prepared,
                                                   max_shift=s.max_shift, flips=s.flips)
            self.reference_name = "holdout-to-train"
            ref_feat = self._feature_nn(self.holdout, exclude_self=False)
        else:
            ref = memorization.pairwise_similarity(train.prepared, train.prepared, max_shift=s.max_shift,
                                                   flips=s.flips, exclude_self=True)
            self.reference_name = "train-to-train (leave-one-out)"
            ref_feat = self._feature_nn(train, exclude_self=True)
        nn = memorization.nearest_neighbours(ref)
        # The nearest/second-nearest ratio rule needs a holdout reference: leave-one-out ratios
        # within the training set are under-dispersed (on demo-cohort heads 3 of 40 fresh
        # volumes crossed a train-to-train ratio bound, none crossed a holdout one).
        self.use_ratio = s.use_ratio and self.holdout is not None
        # Feature distances flag only in a pretrained space (random-weight features are reported only).
        self.use_feature_rule = self.extractor is not None and bool(getattr(self.extractor, "pretrained", True))
        self.reference = nn
        self.reference_feature = ref_feat
        self.rule = calibration.calibrate_rule(
            nn.similarity,
            nn.ratio if self.use_ratio else None,
            ref_feat[1] if ref_feat is not None and self.use_feature_rule else None,
            alpha=s.alpha,
            reference_name=self.reference_name,
        )
        self._cap_with_planted()

    # ------------------------------------------------------------------ pieces
    def _feature_nn(self, queries: VolumeSet, exclude_self: bool) -> tuple[np.ndarray, np.ndarray] | None:
        """Nearest training volume in feature space: (indices (Q,), cosine distances (Q,)).

        Features are standardised per dimension with the training set's mean and s.d. first, so
        the cosine compares deviations from the typical volume rather than the (all-positive)
        activations shared by every head."""
        refs = _both(self.train)
        if self.extractor is None or refs is None or queries.features is None:
            return None
        mu = self.train.features.mean(axis=0)
        sd = self.train.features.std(axis=0)
        keep = sd > 1e-6 * max(float(sd.max()), 1e-30)  # dimensions that vary over the training set
        if not keep.any():
            return None
        z = lambda f: (f[..., keep] - mu[keep]) / sd[keep]
        d = memorization.feature_distances(z(queries.features), z(refs), exclude_self=exclude_self)
        idx = np.argmin(d, axis=1)
        return idx, d[np.arange(len(idx)), idx]

    def score(self, synth: VolumeSet) -> tuple[list[dict[str, Any]], memorization.Alignment]:
        """One record per synthetic volume (flag and reason included) and the raw alignment."""
        s = self.settings
        al = memorization.pairwise_similarity(synth.prepared, self.train.prepared,
                                              max_shift=s.max_shift, flips=s.flips)
        nn = memorization.nearest_neighbours(al)
        feat = self._feature_nn(synth, exclude_self=False)
        flags, reasons = self.rule.apply(nn.similarity, nn.ratio if self.use_ratio else None,
                                         feat[1] if feat is not None and self.use_feature_rule else None)
        records = []
        for i, sid in enumerate(synth.ids):
            j = int(nn.nearest[i])
            aligned = memorization.align(self.train.prepared[j], nn.shift[i], bool(nn.flipped[i]))
            records.append({
                "id": sid,
                "nearest": self.train.ids[j],
                "distance": _f(1.0 - nn.similarity[i]),
                "similarity": _f(nn.similarity[i]),
                "shift": [int(v) for v in nn.shift[i]],
                "flipped": bool(nn.flipped[i]),
                "ssim": _f(memorization.ssim(synth.prepared[i], aligned)),
                "second_nearest": self.train.ids[int(nn.second[i])] if nn.second[i] >= 0 else None,
                "second_similarity": _f(nn.second_similarity[i]),
                "ratio": _f(nn.ratio[i]),
                "feature_nearest": self.train.ids[int(feat[0][i])] if feat is not None else None,
                "feature_distance": _f(feat[1][i]) if feat is not None else None,
                "flagged": bool(flags[i]),
                "reason": reasons[i],
            })
        return records, al

    def _planted(self) -> tuple[VolumeSet, list[tuple[int, str]]]:
        """Near-copies of a few training volumes (noise + 1-voxel shift; mirrored + noise), seeded,
        and (source index, kind) for each."""
        s = self.settings
        rng = np.random.default_rng([s.seed, 0x5EED])
        n = min(s.planted_max, len(self.train))
        pick = np.sort(rng.choice(len(self.train), size=n, replace=False))
        variants = [("noise+shift", (1, 0, -1), False), ("mirror+noise", (0, 0, 0), True)]
        arrays, labels = [], []
        for j in pick:
            for name, shift, flip in variants:
                arrays.append(_plant_prepared(self.train.prepared[j], rng, s.planted_noise, shift, flip))
                labels.append((int(j), name))
        vs = VolumeSet([f"planted-{k}" for k in range(len(arrays))], np.stack(arrays))
        return vs, labels

    def _cap_with_planted(self) -> None:
        """Lower a useless similarity bound (tiny reference) using planted copies (see
        :func:`synthkit.privacy.calibration.cap_between`)."""
        s = self.settings
        vs, _ = self._planted()
        al = memorization.pairwise_similarity(vs.prepared, self.train.prepared, max_shift=s.max_shift, flips=s.flips)
        planted_min = float(al.similarity.max(axis=1).min())
        capped = calibration.cap_between(self.rule.similarity, planted_min)
        if capped is not self.rule.similarity:
            self.rule = dataclasses.replace(self.rule, similarity=capped)

    def planted_copy_check(self) -> dict[str, Any]:
        """Plant near-copies of a few training volumes (noise + 1-voxel shift; mirrored + noise)
        and report how many the rule flags, as a measured sensitivity of this calibration."""
        s = self.settings
        vs, labels = self._planted()
        vs = with_features(vs, self.extractor)
        records, _ = self.score(vs)
        caught = [r["flagged"] and r["nearest"] == self.train.ids[j] for r, (j, _) in zip(records, labels, strict=True)]
        by_kind = {}
        for (_, name), c in zip(labels, caught, strict=True):
            by_kind.setdefault(name, [0, 0])
            by_kind[name][0] += int(c)
            by_kind[name][1] += 1
        return {
            "planted": len(records),
            "caught": int(sum(caught)),
            "by_kind": {k: {"caught": v[0], "planted": v[1]} for k, v in by_kind.items()},
            "noise": s.planted_noise,
            "similarity": [r["similarity"] for r in records],
            "description": "copies of training volumes on the comparison grid: Gaussian noise of "
                           f"{s.planted_noise} x the head intensity s.d. with a (1, 0, -1) voxel shift, "
                           "and left-right mirrored with the same noise",
        }

    def pairs(self, synth: VolumeSet, records: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """For each flagged record: (synthetic prepared volume, nearest training volume mirrored
        and shifted into alignment), both (C, D, H, W), for side-by-side display."""
        index = {tid: j for j, tid in enumerate(self.train.ids)}
        out = {}
        for i, r in enumerate(records):
            if r["flagged"]:
                ref = memorization.align(self.train.prepared[index[r["nearest"]]], r["shift"], r["flipped"])
                out[r["id"]] = (synth.prepared[i], ref)
        return out

    def calibration_record(self, planted_check: bool = True) -> dict[str, Any]:
        """The rule, its thresholds and reference statistics (no case ids), and optionally the
        planted-copy sensitivity check."""
        calib: dict[str, Any] = {
            "rule": "flagged when any active statistic crosses its bound; each bound is the one-sided normal "
                    "prediction bound at false-positive rate alpha, fitted (median and Qn scale; s.d. when n<10) "
                    "to the reference values on a Fisher-z (similarity) or log (ratio, feature distance) scale",
            "reference": self.reference_name,
            "alpha_per_statistic": self.settings.alpha,
            "thresholds": self.rule.to_dict(),
        }
        if planted_check:
            calib["planted_copies"] = self.planted_copy_check()
        return calib

    # ------------------------------------------------------------------ everything
    def run(self, synth: VolumeSet, *, planted_check: bool = True) -> PrivacyResult:
        """Score every synthetic volume, cohort-level scores, calibration record."""
        s = self.settings
        if len(synth) == 0:
            raise ValueError("no synthetic volumes to check")
        records, al_st = self.score(synth)
        cohort: dict[str, Any] = {
            "n_synthetic": len(synth),
            "n_train": len(self.train),
            "n_holdout": len(self.holdout) if self.holdout is not None else 0,
            "n_flagged": sum(r["flagged"] for r in records),
        }
        not_computed: list[str] = []
        if self.holdout is not None:
            al_sh = memorization.pairwise_similarity(synth.prepared, self.holdout.prepared,
                                                     max_shift=s.max_shift, flips=s.flips)
            nn_sh = memorization.nearest_neighbours(al_sh)
            for r, j, sim in zip(records, nn_sh.nearest, nn_sh.similarity, strict=True):
                r["nearest_holdout"] = self.holdout.ids[int(j)]
                r["holdout_similarity"] = _f(sim)
                r["closer_to_train"] = bool(r["similarity"] is not None and r["similarity"] > sim)
            nn_st_sim = np.array([r["similarity"] for r in records], dtype=np.float64)
            cohort["closer_to_train"] = scores.closer_to_train(
                nn_st_sim, nn_sh.similarity, n_train=len(self.train), n_holdout=len(self.holdout))
            cohort["membership_inference"] = scores.membership_inference_auc(
                al_st.similarity.max(axis=0), al_sh.similarity.max(axis=0))
        else:
            not_computed += [
                "closer_to_train: needs a holdout set (--holdout)",
                "membership_inference: needs a holdout set (--holdout)",
                "calibration used train-to-train leave-one-out distances instead of holdout-to-train",
            ]
            if s.use_ratio:
                not_computed.append("ratio rule: off without a holdout set (train-to-train nearest/second-nearest "
                                    "ratios are too narrow a reference); ratios are still reported")
        if self.extractor is None:
            not_computed.append("feature_distance: no feature extractor (features disabled)")
        elif not self.use_feature_rule:
            not_computed.append("feature rule: off with random (not pretrained) MedicalNet weights; feature "
                                "distances are reported only (give --feature-weights)")
        calib = self.calibration_record(planted_check)
        settings = {**asdict(s), "feature_extractor": getattr(self.extractor, "name", None)}
        return PrivacyResult(records, cohort, calib, settings, not_computed)


def _plant_prepared(p: np.ndarray, rng: np.random.Generator, noise: float, shift: tuple[int, int, int],
                    flip: bool) -> np.ndarray:
    """A near-copy of a prepared volume (C, D, H, W), re-standardised inside its head."""
    v = p[:, ::-1] if flip else p
    v = np.roll(v, shift, axis=(1, 2, 3))
    head = np.any(v != 0, axis=0)
    out = np.zeros_like(v)
    for c in range(v.shape[0]):
        x = v[c][head] + rng.normal(0.0, noise, size=int(head.sum()))
        out[c][head] = (x - x.mean()) / max(float(x.std()), 1e-12)
    return out.astype(np.float32)
