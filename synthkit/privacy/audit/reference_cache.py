"""The training side of the memorization check, computed once per training cohort and kept.

Reading, preparing and featurizing every training (and holdout) volume, building the template,
aligning every subject and its mirror onto it and matching the reference set against them is
most of what a :class:`~synthkit.privacy.audit.check.MemorizationChecker` costs, and the same for every
run on one cohort. :func:`load_checker` keeps it in ``<cache>/privacy/<key>.safetensors`` (arrays)
and ``<key>.json`` (shapes, the positions of the used cases, the training mask digests; written
last: its presence marks a complete entry), where ``<cache>`` is synthkit's cache folder
(``$SYNTHKIT_CACHE_DIR``, ``$XDG_CACHE_HOME/synthkit`` or ``~/.cache/synthkit``) and ``key`` is a
BLAKE2 hash of:

* the cache format and the check settings that shape the training side (grid, shifts, mirror,
  head threshold, identity settings, features on or off);
* the feature extractor's name (network and weights SHA-256, or its seed);
* the *contents* of every file of every training and holdout case, in the cohorts' order.

A changed file, setting or extractor gives a new key. On a miss, ``compute(key)`` may start from
a shipped seed for that key (:mod:`synthkit.privacy.audit.reference_seed`). Beside an entry, :class:`CalibrationStore`
keeps the calibration records of runs on it (``<key>.calibration-<sub>.json``, ``sub`` hashing
every check setting and the run size): the planted-copy self-test in them scores planted copies
of the training volumes, the same work for every run of one size. Nothing stored names a case: file names
are hashes, case ids are never written (the used cases are stored as positions in the cohort and
their ids read from the cohort again), and the mask digests are SHA-256 of label values. The
entry is read with safetensors and JSON, never unpickled, and a damaged entry is recomputed. The
checker made from an entry is the one computed from scratch, array for array, so its decisions
are identical.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.privacy.audit import align, memorization
from synthkit.privacy.audit.check import CheckSettings, Details, MemorizationChecker
from synthkit.privacy.audit.identity import IdentityMatch, IdentityReference
from synthkit.privacy.audit.volumes import VolumeSet

log = logging.getLogger(__name__)

FORMAT = 1
_STATE_FIELDS = ("shape", "max_shift", "flips", "head_threshold", "use_features", "identity")
_MATCH = ("nearest", "similarity", "second", "second_similarity", "ratio", "flipped", "shape_dice", "matrix",
          "dice_matrix")


def cache_dir() -> Path:
    """``<synthkit cache>/privacy``."""
    from synthkit.metrics.features import default_cache_dir

    return default_cache_dir() / "privacy"


def cohort_key(cohorts: list[Any], settings: CheckSettings, extractor_name: str | None) -> str:
    """The cache key of the training side for discovered ``cohorts`` ([train] or [train, holdout]);
    ``extractor_name`` names the feature network, its weights and (off the CPU) its device."""
    from synthkit.cache import _hash_path

    h = hashlib.blake2b(digest_size=16)
    state = {k: v for k, v in asdict(settings).items() if k in _STATE_FIELDS}
    h.update(json.dumps({"format": FORMAT, "settings": state, "features": extractor_name}, sort_keys=True,
                        default=list).encode())
    for n, cohort in enumerate(cohorts):
        h.update(f"cohort {n}".encode())
        for case in cohort.cases:
            h.update(b"case")
            for p in [*case.images, *([case.mask] if case.mask is not None else [])]:
                h.update(b"file")
                _hash_path(h, Path(p))
    return h.hexdigest()


@dataclass
class Entry:
    """What a cache entry restores: the checker, the training mask digests (digest -> column)
    and how many training/holdout cases could not be used."""

    checker: MemorizationChecker
    digests: dict[str, int]
    n_errors: int = 0


@dataclass(frozen=True)
class CalibrationStore:
    """Calibration records (with the planted-copy self-test) of one training side, on disk beside
    its entry; :meth:`MemorizationChecker.calibration_record` asks it first."""

    folder: Path
    key: str
    shipped: Path | None = None  # read-only records shipped with a seed (looked at after ``folder``)

    def path(self, checker: MemorizationChecker) -> Path:
        state = json.dumps({"format": FORMAT, "settings": asdict(checker.settings), "n_synthetic": checker.n_synthetic},
                           sort_keys=True, default=list)
        return self.folder / f"{self.key}.calibration-{hashlib.blake2b(state.encode(), digest_size=8).hexdigest()}.json"

    def record(self, checker: MemorizationChecker, compute: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The stored record for ``checker``'s settings and run size, else ``compute()``, stored.
        Either way the record is the JSON text's (numbers as JSON gives them back), so a run
        that reads it and a run that computed it write the same bytes."""
        from synthkit.io.atomic import write_text

        path = self.path(checker)
        for p in [path] + ([self.shipped / path.name] if self.shipped is not None else []):
            try:
                rec = json.loads(p.read_text())
                if isinstance(rec, dict) and rec.get("n_synthetic") == checker.n_synthetic:
                    return rec
            except (OSError, ValueError):
                pass
        text = json.dumps(compute(), indent=1, default=_plain)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_text(path, text)
        except OSError as e:
            log.warning("privacy calibration not cached (%s)", e)
        return json.loads(text)


def _plain(o: Any) -> Any:
    if hasattr(o, "tolist"):  # numpy scalars and arrays
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# ----------------------------------------------------------------------------- arrays <-> objects
def _set_arrays(prefix: str, vs: VolumeSet | None, out: dict[str, np.ndarray]) -> None:
    if vs is None:
        return
    out[f"{prefix}.prepared"] = vs.prepared
    if vs.features is not None:
        out[f"{prefix}.features"] = vs.features
    if vs.features_flipped is not None:
        out[f"{prefix}.features_flipped"] = vs.features_flipped


def _state_arrays(checker: MemorizationChecker) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    _set_arrays("train", checker.train, out)
    _set_arrays("holdout", checker.holdout, out)
    ref = checker.identity_ref
    out["template.mean"], out["template.head"] = ref.template.mean, ref.template.head
    for v, (th, al, idn) in enumerate(zip(ref.theta, ref.aligned, ref.ident, strict=True)):
        out[f"variant{v}.theta"], out[f"variant{v}.aligned"] = th, al
        out[f"variant{v}.residual"], out[f"variant{v}.head"] = idn.residual, idn.head.astype(np.uint8)
    d = checker.reference
    out["ref.similarity"], out["ref.shift"] = d.alignment.similarity, d.alignment.shift
    out["ref.flipped"] = d.alignment.flipped.astype(np.uint8)
    for k in _MATCH:
        v = np.asarray(getattr(d.identity, k))
        out[f"ref.identity.{k}"] = v.astype(np.uint8) if v.dtype == bool else v
    if d.identity.query is not None:
        out["ref.query.residual"] = d.identity.query.residual
        out["ref.query.head"] = d.identity.query.head.astype(np.uint8)
    if d.feature is not None:
        out["ref.feature.index"], out["ref.feature.distance"] = d.feature
    if d.feature_matrix is not None:
        out["ref.feature_matrix"] = d.feature_matrix
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def _volume_set(prefix: str, a: dict[str, np.ndarray], ids: list[str]) -> VolumeSet:
    return VolumeSet(ids, a[f"{prefix}.prepared"], a.get(f"{prefix}.features"), a.get(f"{prefix}.features_flipped"))


def _checker(a: dict[str, np.ndarray], meta: dict[str, Any], train_ids: list[str], holdout_ids: list[str] | None,
             settings: CheckSettings, extractor: Any) -> MemorizationChecker:
    train = _volume_set("train", a, train_ids)
    holdout = _volume_set("holdout", a, holdout_ids) if holdout_ids is not None else None
    template = align.Template(a["template.mean"], a["template.head"])
    nv = int(meta["variants"])
    ident = [align.Identity(a[f"variant{v}.residual"], a[f"variant{v}.head"].astype(bool)) for v in range(nv)]
    probe = MemorizationChecker.__new__(MemorizationChecker)
    probe.settings = settings
    id_ref = IdentityReference.from_state(probe.identity_settings(), template,
                                          [a[f"variant{v}.theta"] for v in range(nv)],
                                          [a[f"variant{v}.aligned"] for v in range(nv)], ident)
    query = (align.Identity(a["ref.query.residual"], a["ref.query.head"].astype(bool))
             if "ref.query.residual" in a else None)
    match = IdentityMatch(**{k: a[f"ref.identity.{k}"] for k in _MATCH if k != "flipped"},
                          flipped=a["ref.identity.flipped"].astype(bool), query=query)
    alignment = memorization.Alignment(a["ref.similarity"], a["ref.shift"], a["ref.flipped"].astype(bool))
    feature = (a["ref.feature.index"], a["ref.feature.distance"]) if "ref.feature.index" in a else None
    details = Details(alignment, match, feature, a.get("ref.feature_matrix"))
    return MemorizationChecker(train, holdout, settings, extractor, state=(id_ref, details))


# ----------------------------------------------------------------------------- the cache
def _read(folder: Path, key: str) -> tuple[dict[str, np.ndarray], dict[str, Any]] | None:
    from safetensors.numpy import load_file

    meta_path, data_path = folder / f"{key}.json", folder / f"{key}.safetensors"
    if not meta_path.is_file() or not data_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != FORMAT:
            return None
        return load_file(str(data_path)), meta
    except Exception as e:  # noqa: BLE001  # any damage: recompute, never trust the entry
        log.warning("privacy cache entry %s unreadable (%s); recomputing", key, type(e).__name__)
        return None


def _write(folder: Path, key: str, checker: MemorizationChecker, used: dict[str, list[int]],
           digests: dict[str, int], n_errors: int) -> None:
    from safetensors.numpy import save

    from synthkit.io.atomic import write_bytes, write_json

    folder.mkdir(parents=True, exist_ok=True)
    write_bytes(folder / f"{key}.safetensors", save(_state_arrays(checker)))
    write_json(folder / f"{key}.json", {"format": FORMAT, "used": used, "digests": digests, "n_errors": n_errors,
                                        "variants": len(checker.identity_ref.theta)})


def load_checker(train_cohort: Any, holdout_cohort: Any | None, settings: CheckSettings, extractor: Any,
                 compute: Callable[[str], tuple[MemorizationChecker, dict[str, int], int]], *,
                 folder: str | Path | None = None, on_hit: Callable[[], None] | None = None,
                 device: str = "cpu", shipped: str | Path | None = None) -> Entry:
    """The checker (and training mask digests) for these cohorts and settings: from the cache
    when an entry for exactly these contents exists, else ``compute(key)`` and store it; either
    way with a :class:`CalibrationStore` beside the entry (also reading ``shipped``, a folder of
    seeds and their calibration records). ``device``: where ``extractor`` runs (its features off
    the CPU are kept apart). A failure to write the cache is logged, never fatal."""
    folder = Path(folder) if folder is not None else cache_dir()
    cohorts = [train_cohort] + ([holdout_cohort] if holdout_cohort is not None else [])
    name = getattr(extractor, "name", None) if settings.use_features else None
    dev = str(device).split(":")[0]
    key = cohort_key(cohorts, settings, f"{name} on {dev}" if name is not None and dev not in ("cpu", "auto") else name)
    entry = _load(folder, key, cohorts, settings, extractor, compute, on_hit)
    entry.checker.calibration_store = CalibrationStore(folder, key, Path(shipped) if shipped is not None else None)
    return entry


def _load(folder: Path, key: str, cohorts: list[Any], settings: CheckSettings, extractor: Any,
          compute: Callable[[str], tuple[MemorizationChecker, dict[str, int], int]],
          on_hit: Callable[[], None] | None) -> Entry:
    hit = _read(folder, key)
    if hit is not None:
        arrays, meta = hit
        try:
            ids = [[cohort.cases[i].case_id for i in meta["used"][name]]
                   for name, cohort in zip(("train", "holdout"), cohorts, strict=False)]
            checker = _checker(arrays, meta, ids[0], ids[1] if len(ids) > 1 else None, settings, extractor)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            log.warning("privacy cache entry %s does not fit (%s); recomputing", key, type(e).__name__)
        else:
            if on_hit is not None:
                on_hit()
            return Entry(checker, {str(k): int(v) for k, v in meta["digests"].items()}, int(meta.get("n_errors", 0)))
    checker, digests, n_errors = compute(key)
    position = [{c.case_id: i for i, c in enumerate(cohort.cases)} for cohort in cohorts]
    used = {"train": [position[0][cid] for cid in checker.train.ids]}
    if len(cohorts) > 1 and checker.holdout is not None:
        used["holdout"] = [position[1][cid] for cid in checker.holdout.ids]
    try:
        _write(folder, key, checker, used, digests, n_errors)
    except OSError as e:
        log.warning("privacy cache not written (%s)", e)
    return Entry(checker, digests, n_errors)
