"""The memorization check: is a synthetic volume a (near-)copy of a training *subject*?

Every synthetic volume is compared with the training cohort by statistics that follow the
subject rather than the anatomy all subjects share (see :mod:`synthkit.privacy.identity`):

* ``identity``: similarity of residuals from the cohort's mean anatomy after affine alignment
  (screened against every training subject, refined for the closest few);
* ``ratio``: nearest / second-nearest identity distance, small when one subject stands out
  (a bound only with a holdout set: leave-one-out ratios are too narrow a reference);
* ``shape_dice``: Dice of the aligned head masks (the head outline, e.g. the face profile);
* ``similarity``: the plain voxel correlation over shifts and a mirror (catches verbatim copies);
* ``feature_distance``: distance in an injected feature space (a bound only for pretrained
  features: ``extractor.pretrained``).

Each bound is calibrated on real reference volumes (:mod:`synthkit.privacy.calibration`) and
checked by planting copies (:mod:`synthkit.privacy.planted`). Typical use::

    train = prepare_set(train_items, settings, extractor)
    holdout = prepare_set(holdout_items, settings, extractor)      # optional
    checker = MemorizationChecker(train, holdout, settings, extractor)
    result = checker.run(prepare_set(synth_items, settings, extractor))
    write_json("privacy.json", result.to_dict())
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from synthkit.privacy import calibration, memorization, planted, scores
from synthkit.privacy.identity import IdentityMatch, IdentityReference, IdentitySettings, cosine
from synthkit.privacy.volumes import (  # noqa: F401  (re-exported: their old home)
    FeatureExtractor,
    Item,
    PrivacyResult,
    VolumeSet,
    prepare_set,
    with_features,
)

ALL_RULES = ("similarity", "identity", "ratio", "shape_dice", "feature_distance")


@dataclass(frozen=True)
class CheckSettings:
    """How volumes are compared, which bounds flag (``rules``), how they are calibrated, and
    the planted-copy self-test (``planted_max`` sources, each copied every way; it passes at a
    catch rate of ``planted_min_catch``)."""

    shape: tuple[int, int, int] = memorization.DEFAULT_SHAPE
    max_shift: int = 2
    flips: bool = True
    head_threshold: float = 0.05
    alpha: float = 1e-4
    use_ratio: bool = True  # only with a holdout set (train-to-train ratios are under-dispersed)
    use_features: bool = True
    rules: tuple[str, ...] = ALL_RULES
    identity: IdentitySettings = field(default_factory=IdentitySettings)
    planted_max: int = 4
    planted_min_catch: float = 0.9
    seed: int = 0

    def __post_init__(self) -> None:
        unknown = set(self.rules) - set(ALL_RULES)
        if unknown:
            raise ValueError(f"unknown rule(s) {sorted(unknown)}; choose from {', '.join(ALL_RULES)}")


@dataclass
class Details:
    """Raw matches behind the records: image alignment (Q, R) and identity match."""

    alignment: memorization.Alignment
    identity: IdentityMatch
    feature: tuple[np.ndarray, np.ndarray] | None
    feature_matrix: np.ndarray | None


def _both(vs: VolumeSet) -> np.ndarray | None:
    if vs.features is None or vs.features_flipped is None:
        return None
    return np.stack([vs.features, vs.features_flipped], axis=1)  # (N, 2, F)


def _f(x: Any) -> float | None:
    x = float(x)
    return x if np.isfinite(x) else None


class MemorizationChecker:
    """Reference statistics and the calibrated rule for one training set (and holdout)."""

    def __init__(self, train: VolumeSet, holdout: VolumeSet | None = None, settings: CheckSettings | None = None,
                 extractor: FeatureExtractor | None = None):
        self.settings = s = settings or CheckSettings()
        self.train = train
        self.holdout = holdout if holdout is not None and len(holdout) > 0 else None
        self.extractor = extractor if s.use_features else None
        if len(train) < 2:
            raise ValueError("the memorization check needs at least 2 training volumes")
        self.identity_ref = IdentityReference(train.prepared, IdentitySettings(**{**asdict(s.identity),
                                                                                "flips": s.flips}))
        self.use_ratio = s.use_ratio and self.holdout is not None
        self.use_feature_rule = self.extractor is not None and bool(getattr(self.extractor, "pretrained", True))
        if self.holdout is not None:
            self.reference_name = "holdout-to-train"
            ref = self._match(self.holdout, exclude_self=False)
        else:
            self.reference_name = "train-to-train (leave-one-out)"
            ref = self._match(train, exclude_self=True)
        self.reference = ref
        self.rule = calibration.calibrate_rule(self._values(ref), alpha=s.alpha, reference_name=self.reference_name)

    # ------------------------------------------------------------------ pieces
    def _feature_nn(self, queries: VolumeSet, exclude_self: bool) -> tuple[tuple[np.ndarray, np.ndarray] | None,
                                                                          np.ndarray | None]:
        """Nearest training volume in feature space ((indices (Q,), cosine distances (Q,)),
        distance matrix (Q, R)). Features are standardised per dimension with the training
        set's mean and s.d., so the cosine compares deviations from the typical volume."""
        refs = _both(self.train)
        if self.extractor is None or refs is None or queries.features is None:
            return None, None
        mu, sd = self.train.features.mean(axis=0), self.train.features.std(axis=0)
        keep = sd > 1e-6 * max(float(sd.max()), 1e-30)
        if not keep.any():
            return None, None
        z = lambda f: (f[..., keep] - mu[keep]) / sd[keep]
        d = memorization.feature_distances(z(queries.features), z(refs), exclude_self=exclude_self)
        idx = np.argmin(d, axis=1)
        return (idx, d[np.arange(len(idx)), idx]), d

    def _match(self, queries: VolumeSet, *, exclude_self: bool) -> Details:
        s = self.settings
        al = memorization.pairwise_similarity(queries.prepared, self.train.prepared, max_shift=s.max_shift,
                                              flips=s.flips, exclude_self=exclude_self)
        idm = self.identity_ref.compare(queries.prepared, exclude_self=exclude_self)
        feat, fmat = self._feature_nn(queries, exclude_self)
        return Details(al, idm, feat, fmat)

    def _values(self, d: Details) -> dict[str, np.ndarray | None]:
        """The flagging statistics of matched queries: name -> (Q,) (None where off)."""
        on = set(self.settings.rules)
        vals: dict[str, np.ndarray | None] = {
            "similarity": d.alignment.similarity.max(axis=1),
            "identity": d.identity.similarity,
            "ratio": d.identity.ratio if self.use_ratio else None,
            "shape_dice": d.identity.shape_dice,
            "feature_distance": d.feature[1] if d.feature is not None and self.use_feature_rule else None,
        }
        return {k: (v if k in on else None) for k, v in vals.items()}

    def score(self, synth: VolumeSet) -> tuple[list[dict[str, Any]], Details]:
        """One record per synthetic volume (flag and reason included) and the raw matches."""
        d = self._match(synth, exclude_self=False)
        flags, reasons = self.rule.apply(self._values(d))
        al, idm = d.alignment, d.identity
        image = memorization.nearest_neighbours(al)
        records = []
        for i, sid in enumerate(synth.ids):
            j = int(idm.nearest[i])
            shift, flip = al.shift[i, j], bool(al.flipped[i, j])
            aligned = memorization.align(self.train.prepared[j], shift, flip)
            records.append({
                "id": sid,
                "nearest": self.train.ids[j],
                "identity": _f(idm.similarity[i]),
                "second_nearest": self.train.ids[int(idm.second[i])] if idm.second[i] >= 0 else None,
                "second_identity": _f(idm.second_similarity[i]),
                "ratio": _f(idm.ratio[i]),
                "shape_dice": _f(idm.shape_dice[i]),
                "image_nearest": self.train.ids[int(image.nearest[i])],
                "similarity": _f(image.similarity[i]),
                "distance": _f(1.0 - image.similarity[i]),
                "shift": [int(v) for v in shift],
                "flipped": flip,
                "ssim": _f(memorization.ssim(synth.prepared[i], aligned)),
                "feature_nearest": self.train.ids[int(d.feature[0][i])] if d.feature is not None else None,
                "feature_distance": _f(d.feature[1][i]) if d.feature is not None else None,
                "flagged": bool(flags[i]),
                "reason": reasons[i],
            })
        return records, d

    def crossed(self, d: Details) -> list[list[str]]:
        """Per query of ``d``, the statistics whose bound it crosses (why it is flagged)."""
        vals = self._values(d)
        out: list[list[str]] = [[] for _ in range(len(d.identity.similarity))]
        for th in self.rule.bounds:
            v = vals.get(th.statistic)
            if v is not None:
                for i in np.flatnonzero(th.crosses(np.asarray(v, dtype=np.float64))):
                    out[int(i)].append(th.statistic)
        return out

    def similarity_matrices(self, d: Details) -> dict[str, np.ndarray]:
        """(Q, R) scores, higher = closer, per statistic, for attacks that rank training subjects."""
        out = {"identity": d.identity.matrix, "shape_dice": d.identity.dice_matrix,
               "image": d.alignment.similarity}
        if d.feature_matrix is not None:
            out["features"] = -d.feature_matrix
        return out

    def planted_copy_check(self) -> dict[str, Any]:
        """Plant copies of a few training volumes and report how many the rule catches (see
        :mod:`synthkit.privacy.planted`); the bounds are not changed by it."""
        s = self.settings
        arrays, labels = planted.planted_copies(self.train.prepared, s.planted_max, planted.DEFAULT_KINDS, s.seed,
                                                flips=s.flips)
        vs = with_features(VolumeSet([f"planted-{k}" for k in range(len(arrays))], arrays), self.extractor)
        records, _ = self.score(vs)
        return planted.catch_report(records, labels, self.train.ids, planted.DEFAULT_KINDS, s.planted_min_catch)

    def pairs(self, synth: VolumeSet, records: list[dict[str, Any]]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """For each flagged record: (synthetic prepared volume, nearest training subject mirrored
        and shifted into voxel alignment), both (C, D, H, W), for side-by-side display."""
        index = {tid: j for j, tid in enumerate(self.train.ids)}
        return {r["id"]: (synth.prepared[i], memorization.align(self.train.prepared[index[r["nearest"]]],
                                                                r["shift"], r["flipped"]))
                for i, r in enumerate(records) if r["flagged"]}

    def calibration_record(self, planted_check: bool = True) -> dict[str, Any]:
        """The rule, its thresholds and reference statistics (no case ids), and optionally the
        planted-copy self-test."""
        calib: dict[str, Any] = {
            "rule": "flagged when any active statistic crosses its bound; each bound is the one-sided normal "
                    "prediction bound at false-positive rate alpha, fitted (median and Qn scale; s.d. when n<10) "
                    "to the reference values on a Fisher-z (similarity, identity), logit (shape_dice) or log "
                    "(ratio, feature distance) scale",
            "statistics": {
                "identity": "cosine of residuals from the training template after affine alignment (refined "
                            "against the closest subjects)",
                "ratio": "nearest / second-nearest identity distance",
                "shape_dice": "Dice of the aligned head masks",
                "similarity": "voxel correlation over shifts and a left-right mirror",
                "feature_distance": "cosine distance of standardised extractor features",
            },
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
        if len(synth) == 0:
            raise ValueError("no synthetic volumes to check")
        records, d = self.score(synth)
        cohort: dict[str, Any] = {"n_synthetic": len(synth), "n_train": len(self.train),
                                  "n_holdout": len(self.holdout) if self.holdout is not None else 0,
                                  "n_flagged": sum(r["flagged"] for r in records)}
        if self.holdout is not None:
            cohort.update(self._cohort_scores(records, d))
        calib = self.calibration_record(planted_check)
        settings = {**asdict(self.settings), "feature_extractor": getattr(self.extractor, "name", None)}
        return PrivacyResult(records, cohort, calib, settings, self._not_computed(), details=d)

    def _cohort_scores(self, records: list[dict[str, Any]], d: Details) -> dict[str, Any]:
        """Closer-to-train and distance-based membership scores on identity residuals (screening
        values, unmirrored, so that training and holdout subjects are treated alike)."""
        syn_res = d.identity.query.residual
        hold = self.reference.identity.query  # the holdout, aligned when the rule was calibrated
        st = cosine(syn_res, self.identity_ref.ident[0].residual)  # (S, R)
        sh = cosine(syn_res, hold.residual)  # (S, H)
        for r, j, sim_h, sim_t in zip(records, sh.argmax(axis=1), sh.max(axis=1), st.max(axis=1), strict=True):
            r["nearest_holdout"] = self.holdout.ids[int(j)]
            r["holdout_identity"] = _f(sim_h)
            r["closer_to_train"] = bool(sim_t > sim_h)
        out = {"closer_to_train": scores.closer_to_train(st.max(axis=1), sh.max(axis=1), n_train=len(self.train),
                                                          n_holdout=len(self.holdout)),
               "membership_inference": scores.membership_inference_auc(st.max(axis=0), sh.max(axis=0))}
        out["membership_inference"]["score"] = "identity similarity of each real volume to its nearest synthetic volume"
        return out

    def _not_computed(self) -> list[str]:
        s, out = self.settings, []
        if self.holdout is None:
            out += ["closer_to_train: needs a holdout set (--holdout)",
                    "membership_inference: needs a holdout set (--holdout)",
                    "calibration used train-to-train leave-one-out distances instead of holdout-to-train"]
            if s.use_ratio and "ratio" in s.rules:
                out.append("ratio rule: off without a holdout set (train-to-train nearest/second-nearest "
                           "ratios are too narrow a reference); ratios are still reported")
        if self.extractor is None:
            out.append("feature_distance: no feature extractor (features disabled)")
        elif not self.use_feature_rule:
            out.append("feature rule: off with random (not pretrained) weights; feature distances are reported only "
                       "(give --feature-weights)")
        return out
