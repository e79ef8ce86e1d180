"""What ``synthkit anonymize`` checks each generated volume against, and its gate.

* :class:`Reference`: the model's training cohort prepared for the memorization check
  (:class:`~synthkit.privacy.audit.check.MemorizationChecker`, calibrated on ``--holdout`` when given,
  else train-to-train), and the content hash of every training mask.
* :func:`source_columns`: which input cases ARE training subjects. An input case whose mask has
  the same voxels (SHA-256 of shape and values) as one training case's mask is that subject;
  then every volume made from it has a known source, and the re-identification (linkage)
  attack of :mod:`synthkit.privacy.audit.attacks` can be run on it one volume at a time.
* :func:`make_gate`: the engine's gate. Per volume it records the memorization statistics and,
  when the source is known, the source's rank among the training subjects by each attacker
  statistic (identity, shape Dice, voxels, features; 1 = the attacker's top match). The volume
  is flagged when the copy rule flags it or, with the linkage gate on, when its own source is
  the top-1 match by any statistic (chance: about 1/N per statistic). The head outline
  (``shape_dice``) comes mostly from the mask, which a new image seed does not change: when it
  flags a volume on two attempts in a row, the record says ``"retry": False`` and the engine
  drops the volume without trying more seeds.

Records hold numbers, ranks and booleans only: never a training or input case id.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.errors import SynthkitError
from synthkit.privacy.audit.check import CheckSettings, MemorizationChecker
from synthkit.privacy.audit.reference_seed import FOLDER
from synthkit.privacy.audit.volumes import prepare_set

#: Per-volume statistics of the copy check kept in the manifest and the report (no ids).
RECORD_KEYS = ("identity", "ratio", "shape_dice", "similarity", "distance", "ssim", "feature_distance", "flipped",
               "shift", "flagged", "reason")
#: Statistics the mask mostly fixes: a new image seed hardly changes them.
MASK_BORNE = frozenset({"shape_dice"})
#: The folder of a run that holds seeds of its training side (:func:`prepare_reference`).
SEEDS = FOLDER
LINKS_FROM = "input masks matched to training masks by content (SHA-256 of their voxels)"


def mask_digest(data: np.ndarray) -> str:
    """SHA-256 of a label map's shape and integer values (file format, header and dtype aside)."""
    a = np.ascontiguousarray(np.asarray(data)).astype(np.int64, copy=False)
    h = hashlib.sha256(repr(tuple(a.shape)).encode())
    h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class Reference:
    """The training cohort as the check sees it. ``digests``: mask hash -> training column (the
    checker's order; masks shared by several training cases left out); ``holdout_path``: real
    cases not trained on (membership inference, calibration), or None."""

    checker: MemorizationChecker
    train_path: Path
    holdout_path: Path | None = None
    digests: dict[str, int] = field(default_factory=dict)
    _calibration: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def settings(self) -> CheckSettings:
        return self.checker.settings

    @property
    def n_train(self) -> int:
        return len(self.checker.train)

    def calibration(self) -> dict[str, Any]:
        """The calibration record with the planted-copy self-test (computed once per run size)."""
        if self._calibration is None or self._calibration.get("n_synthetic") != self.checker.n_synthetic:
            self._calibration = self.checker.calibration_record(planted_check=True)
        return self._calibration

    def case_ids(self) -> list[str]:
        """Training and holdout case ids, for the output's identifier scan (never written)."""
        ids = list(self.checker.train.ids)
        if self.checker.holdout is not None:
            ids += list(self.checker.holdout.ids)
        return ids


def prepare_reference(train_path: str | Path, check: CheckSettings, *, holdout: str | Path | None = None,
                      feature_weights: str | Path | None = None,
                      note: Callable[[str], None] | None = None, cache: bool | str | Path = True,
                      shipped: str | Path | None = None) -> Reference:
    """Read and prepare the training cohort (and ``holdout``) for the check; hash the training
    masks. ``cache``: keep the result in synthkit's cache folder (or this folder) by the content
    of the cohorts, and reuse it (:mod:`synthkit.privacy.audit.reference_cache`); False recomputes.
    ``shipped``: a folder of seeds (a shipped model's ``privacy_reference``,
    :mod:`synthkit.privacy.audit.reference_seed`): on a cache miss, a seed for exactly this
    cohort's contents saves the features and alignments."""
    from synthkit.io import discover_cohort
    from synthkit.privacy.audit.reference_cache import load_checker
    from synthkit.privacy.audit.reference_seed import read_seed
    from synthkit.privacy.audit.runner import make_extractor, training_side

    extractor = make_extractor(feature_weights, seed=check.seed) if check.use_features else None

    def compute(key: str | None = None) -> tuple[MemorizationChecker, dict[str, int], int]:
        errors: list[dict[str, str]] = []
        seed = read_seed(shipped, key) if key is not None and holdout is None else None
        checker = training_side(train_path, holdout, check, extractor, errors=errors, seed=seed)
        if seed is not None and seed.used:
            if note is not None:
                note("memorization check: training side from the reference shipped with the model")
            return checker, seed.digests, len(errors)
        return checker, _training_digests(Path(train_path), checker.train.ids), len(errors)

    if cache is False:
        checker, digests, n_errors = compute()
    else:
        folder = None if cache is True else Path(cache)
        entry = load_checker(discover_cohort(train_path), discover_cohort(holdout) if holdout is not None else None,
                             check, extractor, compute, folder=folder, shipped=shipped,
                             on_hit=lambda: note and note("memorization check: training side read from the cache"))
        checker, digests, n_errors = entry.checker, entry.digests, entry.n_errors
    if n_errors and note is not None:
        note(f"{n_errors} training/holdout case(s) could not be read and are not compared against")
    return Reference(checker, Path(train_path), Path(holdout) if holdout is not None else None, digests)


def _training_digests(train_path: Path, train_ids: list[str]) -> dict[str, int]:
    from synthkit.io import discover_cohort, read_mask

    column = {cid: j for j, cid in enumerate(train_ids)}
    seen: dict[str, list[int]] = {}
    for case in discover_cohort(train_path, need_images=False).cases:
        if case.case_id not in column or case.mask is None:
            continue
        try:
            seen.setdefault(mask_digest(read_mask(case).data), []).append(column[case.case_id])
        except SynthkitError:
            continue
    return {d: cols[0] for d, cols in seen.items() if len(cols) == 1}


def source_columns(cohort: Any, ref: Reference | None) -> dict[str, int]:
    """Input case id -> training column, for every input case whose mask is a training mask
    (kept in memory only: it links an input to a training subject)."""
    from synthkit.io import read_mask

    if ref is None or not ref.digests:
        return {}
    out = {}
    for case in cohort.cases:
        if case.mask is None:
            continue
        try:
            j = ref.digests.get(mask_digest(read_mask(case).data))
        except SynthkitError:
            continue  # the engine reports the case
        if j is not None:
            out[case.case_id] = j
    return out


def make_gate(ref: Reference, sources: dict[str, int], *, linkage: bool,
              on_attempt: Callable[[Any, Any, Any, dict[str, Any]], None] | None = None
              ) -> Callable[[Any, Any, Any], dict[str, Any]]:
    """The engine's gate (see the module text): ``gate(job, image Volume, mask Volume) -> record``.
    ``sources``: :func:`source_columns`; ``linkage``: also flag a volume whose source is the
    attacker's top-1 match; ``on_attempt(job, image, mask, record)``: called for every judged
    volume (an observer, e.g. a benchmark keeping the first attempts)."""
    from synthkit.privacy.audit.attacks import source_ranks

    checker, s = ref.checker, ref.settings
    shape_flagged: set[Any] = set()  # jobs whose previous attempt the head outline flagged

    def gate(job: Any, vol: Any, mask: Any) -> dict[str, Any]:
        vs = prepare_set([(str(job.key), vol.data, vol.affine, mask.data)], s, checker.extractor, mirrored=False)
        full, d = checker.score(vs)
        rec = {k: full[0][k] for k in RECORD_KEYS}
        rec["copy_flag"] = bool(full[0]["flagged"])
        why = set(checker.crossed(d)[0]) if rec["copy_flag"] else set()
        reasons = [full[0]["reason"]] if rec["copy_flag"] and full[0]["reason"] else []
        src = sources.get(getattr(job.case, "case_id", None), -1)
        if src >= 0:
            ranks = {name: int(source_ranks(m, np.array([src]))[0])
                     for name, m in checker.similarity_matrices(d).items()}
            top1 = sorted(name for name, r in ranks.items() if r == 1)
            rec["source_rank"], rec["reidentified"] = ranks, bool(top1)
            if linkage and top1:
                why |= set(top1)
                reasons.append("re-identified: its own source is the closest training subject by " + ", ".join(top1))
        rec["flagged"] = bool(rec["copy_flag"] or (linkage and rec.get("reidentified", False)))
        rec["reason"] = "; ".join(reasons)
        if rec["flagged"] and why & MASK_BORNE:
            if job.key in shape_flagged:
                rec["retry"] = False
                rec["reason"] += " (the head outline flagged it with two seeds: it comes from the mask)"
            shape_flagged.add(job.key)
        if on_attempt is not None:
            on_attempt(job, vol, mask, rec)
        return rec

    return gate


@dataclass
class PrivacyRun:
    """The privacy side of one anonymize run: reference, calibration, linkage gate, results."""

    ref: Reference | None = None
    calibration: dict[str, Any] | None = None
    gate_linkage: bool = False
    n_linked_inputs: int = 0
    attacks: dict[str, Any] = field(default_factory=dict)
    not_computed: list[str] = field(default_factory=list)

    def start(self, gate_linkage: bool | None, cohort: Any, previous: dict[str, Any], note: Callable[[str], None],
              on_attempt: Any = None, n_volumes: int | None = None) -> Callable[..., dict[str, Any]]:
        """Calibration for a run of ``n_volumes`` volumes (default: one per input case; the
        earlier run's when resuming: thresholds never change halfway), the inputs that are
        training subjects, the linkage gate (``gate_linkage`` None: on when some input is a
        training subject); returns the engine's gate (:func:`make_gate`)."""
        if self.ref is None:
            raise ValueError("PrivacyRun.start needs a reference")
        self.ref.checker.n_synthetic = max(1, n_volumes or len(cohort.cases))
        self.calibration = previous.get("calibration") or self.ref.calibration()
        if not self.ref.checker.rule.calibrated:
            note(f"memorization check: {self.ref.checker.rule.statement}")
        sources = source_columns(cohort, self.ref)
        self.n_linked_inputs = len(sources)
        self.gate_linkage = bool(sources) if gate_linkage is None else gate_linkage
        if gate_linkage and not sources:
            note("--gate-linkage: no input case is a training subject (no mask matches a training mask)")
        return make_gate(self.ref, sources, linkage=self.gate_linkage, on_attempt=on_attempt)

    def section(self, privacy_gate: bool) -> dict[str, Any]:
        """The manifest's ``privacy`` section (numbers only: no case ids)."""
        ref = self.ref
        return {"checked": ref is not None, "gate": privacy_gate, "gate_linkage": self.gate_linkage,
                "inputs_in_training": self.n_linked_inputs if ref is not None else None,
                "calibration": self.calibration,
                "reference": f"training cohort, calibrated {ref.checker.reference_name}" if ref is not None else None,
                "attacks": self.attacks, "not_computed": self.not_computed}
