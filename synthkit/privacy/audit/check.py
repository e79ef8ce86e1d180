"""The memorization check: is a synthetic volume a (near-)copy of a training *subject*?

Every synthetic volume is compared with the training cohort by statistics that follow the
subject rather than the anatomy all subjects share (see :mod:`synthkit.privacy.audit.identity`):

* ``identity``: similarity of residuals from the cohort's mean anatomy after affine alignment
  (screened against every training subject, refined for the closest few);
* ``ratio``: nearest / second-nearest identity distance, small when one subject stands out
  (a bound only with a holdout set: leave-one-out ratios are too narrow a reference);
* ``shape_dice``: Dice of the aligned head masks (the head outline, e.g. the face profile);
* ``similarity``: the plain voxel correlation over shifts and a mirror (catches verbatim copies);
* ``feature_distance``: distance in an injected feature space (a bound only for pretrained
  features: ``extractor.pretrained``).

Each bound is calibrated on real reference volumes (:mod:`synthkit.privacy.audit.calibration`) at one
false-positive rate for the whole run (``alpha``, shared over the synthetic volumes and the
statistics), and checked by planting copies (:mod:`synthkit.privacy.audit.planted`). With fewer than
:data:`~synthkit.privacy.audit.calibration.MIN_PROMISE` reference subjects no rate can be promised:
only near-verbatim copies are flagged and the result says so. Typical use::

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

from synthkit.privacy.audit import calibration, memorization, planted, scores
from synthkit.privacy.audit.identity import (
    IdentityMatch,
    IdentityReference,
    IdentitySettings,
    cosine,
)
from synthkit.privacy.audit.volumes import FeatureExtractor, PrivacyResult, VolumeSet, with_features

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
    alpha: float = calibration.DEFAULT_ALPHA  # false-positive rate, shared over the statistics (and volumes)
    family: calibration.Family = "run"  # alpha for the whole run ("run") or per synthetic volume ("volume")
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
                 extractor: FeatureExtractor | None = None, *,
                 state: tuple[IdentityReference, Details] | None = None):
        """``state``: the training side computed before (:attr:`identity_ref`, :attr:`reference`
        for these very sets and settings, e.g. from :mod:`synthkit.privacy.audit.reference_cache`)."""
        self.settings = s = settings or CheckSettings()
        self.train = train
        self.holdout = holdout if holdout is not None and len(holdout) > 0 else None
        self.extractor = extractor if s.use_features else None
        if len(train) < 2:
            raise ValueError("the memorization check needs at least 2 training volumes")
        self.use_ratio = s.use_ratio and self.holdout is not None
        self.use_feature_rule = self.extractor is not None and bool(getattr(self.extractor, "pretrained", True))
        self.reference_name = "holdout-to-train" if self.holdout is not None else "train-to-train (leave-one-out)"
        if state is not None:
            self.identity_ref, ref = state
        else:
            self.identity_ref = IdentityReference(train.prepared, self.identity_settings())
            ref = (self._match(self.holdout, exclude_self=False) if self.holdout is not None
                   else self._match(train, exclude_self=True))
        self.reference = ref
        self.reference_values = self._values(ref)
        self.n_reference = len(ref.identity.similarity)
        self.n_synthetic = 1  # volumes the run-wide rate is shared over (run() and anonymize set it)
        self._rules: dict[int, calibration.Rule] = {}
        #: keeps calibration records with the planted-copy self-test across runs (set by
        #: :mod:`synthkit.privacy.audit.reference_cache`; None: computed every time)
        self.calibration_store: Any = None

    def identity_settings(self) -> IdentitySettings:
        return IdentitySettings(**{**asdict(self.settings.identity), "flips": self.settings.flips})

    @property
    def rule(self) -> calibration.Rule:
        """The rule for :attr:`n_synthetic` volumes."""
        return self.rule_for(self.n_synthetic)

    def rule_for(self, n_synthetic: int) -> calibration.Rule:
        """The bounds for a run of ``n_synthetic`` volumes (the run-wide ``alpha`` shared over
        them and the statistics); the fixed near-verbatim rule below ``MIN_PROMISE`` references."""
        n = max(1, int(n_synthetic))
        if n not in self._rules:
            s = self.settings
            if self.n_reference < calibration.MIN_PROMISE:
                on = [k for k, v in self.reference_values.items() if v is not None]
                self._rules[n] = calibration.fixed_rule(on, self.n_reference, self.reference_name, alpha=s.alpha,
                                                        n_synthetic=n)
            else:
                self._rules[n] = calibration.calibrate_rule(self.reference_values, alpha=s.alpha, n_synthetic=n,
                                                            family=s.family, reference_name=self.reference_name)
        return self._rules[n]

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

    def score(self, synth: VolumeSet, n_synthetic: int | None = None) -> tuple[list[dict[str, Any]], Details]:
        """One record per synthetic volume (flag and reason included) and the raw matches;
        ``n_synthetic``: the run's size for the bounds (default :attr:`n_synthetic`)."""
        d = self._match(synth, exclude_self=False)
        flags, reasons = self.rule_for(n_synthetic or self.n_synthetic).apply(self._values(d))
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
        """Plant copies of a few training volumes and report how many the rule (for
        :attr:`n_synthetic` volumes) catches (see :mod:`synthkit.privacy.audit.planted`); the bounds
        are not changed by it."""
        s = self.settings
        arrays, labels = planted.planted_copies(self.train.prepared, s.planted_max, planted.DEFAULT_KINDS, s.seed,
                                                flips=s.flips)
        vs = with_features(VolumeSet([f"planted-{k}" for k in range(len(arrays))], arrays), self.extractor,
                           mirrored=False)
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
        """The rule for :attr:`n_synthetic` volumes, its thresholds and reference statistics (no
        case ids), what it promises, and optionally the planted-copy self-test (read from
        :attr:`calibration_store` when this training side, these settings and this run size were
        calibrated before)."""
        if planted_check and self.calibration_store is not None:
            return self.calibration_store.record(self, lambda: self._calibration_record(True))
        return self._calibration_record(planted_check)

    def _calibration_record(self, planted_check: bool) -> dict[str, Any]:
        rule = self.rule
        calib: dict[str, Any] = {
            "rule": "flagged when any active statistic crosses its bound; the false-positive rate alpha is shared "
                    "over the statistics (and, for family 'run', over all synthetic volumes; Bonferroni); each "
                    "bound is the more extreme of the one-sided normal prediction bound at the per-test rate "
                    "(median and Qn scale, s.d. when n<10, on a "
                    "Fisher-z (similarity, identity), logit (shape_dice) or log (ratio, feature distance) scale) "
                    "and the most extreme reference value" if rule.calibrated else
                    "flagged when a fixed near-verbatim bound is crossed (too few reference subjects to calibrate)",
            "statistics": {
                "identity": "cosine of residuals from the training template after affine alignment (refined "
                            "against the closest subjects)",
                "ratio": "nearest / second-nearest identity distance",
                "shape_dice": "Dice of the aligned head masks",
                "similarity": "voxel correlation over shifts and a left-right mirror",
                "feature_distance": "cosine distance of standardised extractor features",
            },
            "reference": self.reference_name,
            "n_reference": self.n_reference,
            "calibrated": rule.calibrated,
            "alpha": rule.alpha,
            "family": rule.family,
            "n_synthetic": rule.n_synthetic,
            "alpha_per_test": rule.alpha_per_test if rule.calibrated else None,
            "realised_rates": rule.realised_rates(),
            "promise": rule.statement or _promise(rule, self.n_reference),
            "thresholds": rule.to_dict(),
        }
        if planted_check:
            calib["planted_copies"] = self.planted_copy_check()
        return calib

    # ------------------------------------------------------------------ everything
    def run(self, synth: VolumeSet, *, planted_check: bool = True) -> PrivacyResult:
        """Score every synthetic volume, cohort-level scores, calibration record."""
        if len(synth) == 0:
            raise ValueError("no synthetic volumes to check")
        self.n_synthetic = len(synth)
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
        if not self.rule.calibrated:
            out.append("calibrated copy flag: " + self.rule.statement)
        if self.holdout is None:
            out += ["closer_to_train: needs a holdout set (--holdout)",
                    "membership_inference: needs a holdout set (--holdout)",
                    ("calibration used train-to-train leave-one-out distances instead of holdout-to-train, a weaker "
                     "reference (a training subject's nearest is one of n - 1 others, all in the template), so fresh "
                     "volumes are flagged more often than alpha says: give --holdout")]
            if s.use_ratio and "ratio" in s.rules:
                out.append("ratio rule: off without a holdout set (train-to-train nearest/second-nearest "
                           "ratios are too narrow a reference); ratios are still reported")
        if self.extractor is None:
            out.append("feature_distance: no feature extractor (features disabled)")
        elif not self.use_feature_rule:
            out.append("feature rule: off with random (not pretrained) weights; feature distances are reported only "
                       "(give --feature-weights)")
        return out


def _promise(rule: calibration.Rule, n_reference: int) -> str:
    """One line: what the calibrated rule promises, and how uncertain that is with this many references."""
    r = rule.realised_rates() or {}
    unit = (f"any of the run's {rule.n_synthetic} volume(s)" if rule.family == "run" else "a volume")
    return (f"a synthetic volume that is not a copy: chance at most {rule.alpha:.0%} that {unit} is flagged "
            f"(per test {rule.alpha_per_test:.2g}, normal model); with {n_reference} reference subjects the bounds "
            f"are uncertain: realised rate per volume {r.get('per_volume_mean', float('nan')):.2g} on average, "
            f"{r.get('per_volume_q95', float('nan')):.2g} at the 95% point (parametric bootstrap); expected fresh "
            f"volumes flagged in this run {r.get('expected_flagged', float('nan')):.2g} of {rule.n_synthetic}")
