"""A reference-cache entry small enough to ship beside a model: the costly, small part of the
training side of the memorization check, for one training cohort.

A full entry of :mod:`synthkit.privacy.audit.reference_cache` holds the prepared, aligned and
band-passed training volumes (57 MB for the demo's 64 subjects at 32^3). Most of them are cheap
to recompute from the training cohort; what is costly is small. A **seed** keeps only that:

* the deepbet features of every training volume and of its mirror (``train.features``,
  ``train.features_flipped``);
* every subject's affine alignment onto the template, per mirror variant (``variant{v}.theta``):
  the template, aligned volumes, residuals and heads follow from them
  (:meth:`~synthkit.privacy.audit.identity.IdentityReference.from_alignments`);
* the leave-one-out reference statistics the rule is calibrated on (``ref.*``: voxel and identity
  matches, feature neighbours) and the training mask digests;

and, beside it, calibration records of runs on it (the planted-copy self-test), as the cache
keeps them. Files: ``<folder>/<key>.seed.safetensors`` and ``<key>.seed.json``, ``key`` being the
reference cache's key: the content hash of every training file, the check settings and the
feature extractor. A seed is used only for a cohort with that key (its bytes as shipped), and
only after the training volumes prepared here are found equal, by SHA-256, to those the seed was
computed from; otherwise the training side is computed as without it. Nothing in it names a case.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.privacy.audit.check import CheckSettings, MemorizationChecker
from synthkit.privacy.audit.identity import IdentityReference
from synthkit.privacy.audit.volumes import VolumeSet

log = logging.getLogger(__name__)

SEED_FORMAT = 1
#: The folder of a run (a shipped model) that holds seeds for its training cohort.
FOLDER = "privacy_reference"
#: Arrays of a cache entry recomputed from the training volumes and their alignments (not shipped).
_RECOMPUTED = re.compile(r"train\.prepared|template\..*|variant\d+\.(aligned|residual|head)|ref\.query\..*")


def prepared_digest(prepared: np.ndarray) -> str:
    """SHA-256 of prepared volumes (N, C, D, H, W) as float32, with their shape."""
    a = np.ascontiguousarray(prepared, dtype=np.float32)
    h = hashlib.sha256(repr(a.shape).encode())
    h.update(a.tobytes())
    return h.hexdigest()


@dataclass
class Seed:
    """A seed read from disk (see the module text); :meth:`restore` checks and uses it."""

    key: str
    arrays: dict[str, np.ndarray]
    meta: dict[str, Any]
    used: bool = False

    @property
    def digests(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.meta["digests"].items()}

    def restore(self, train: VolumeSet, settings: CheckSettings, extractor: Any) -> MemorizationChecker | None:
        """The checker on ``train`` (prepared here, without features) as computing it would give,
        or None (logged) when ``train`` is not what the seed was made from."""
        from synthkit.privacy.audit.reference_cache import _checker

        if len(train) != self.meta["n_train"] or prepared_digest(train.prepared) != self.meta["prepared_sha256"]:
            log.warning("shipped privacy reference %s does not fit the prepared training volumes; computing",
                        self.key)
            return None
        probe = MemorizationChecker.__new__(MemorizationChecker)
        probe.settings = settings
        nv = int(self.meta["variants"])
        try:
            ref = IdentityReference.from_alignments(train.prepared, probe.identity_settings(),
                                                    [self.arrays[f"variant{v}.theta"] for v in range(nv)])
            a = {**self.arrays, "train.prepared": train.prepared, "template.mean": ref.template.mean,
                 "template.head": ref.template.head}
            for v, idn in enumerate(ref.ident):
                a[f"variant{v}.aligned"], a[f"variant{v}.residual"] = ref.aligned[v], idn.residual
                a[f"variant{v}.head"] = idn.head.astype(np.uint8)
            if self.meta["query"]:  # leave-one-out: the queries are the training volumes on the template
                a["ref.query.residual"], a["ref.query.head"] = ref.ident[0].residual, ref.ident[0].head.astype(np.uint8)
            checker = _checker(a, self.meta, list(train.ids), None, settings, extractor)
        except (KeyError, IndexError, TypeError, ValueError) as e:
            log.warning("shipped privacy reference %s unusable (%s); computing", self.key, type(e).__name__)
            return None
        self.used = True
        return checker


def seed_paths(folder: Path, key: str) -> tuple[Path, Path]:
    return folder / f"{key}.seed.json", folder / f"{key}.seed.safetensors"


def read_seed(folder: str | Path | None, key: str) -> Seed | None:
    """The seed for ``key`` in ``folder``, or None (none there, another format, or damaged)."""
    from safetensors.numpy import load_file

    if folder is None:
        return None
    meta_path, data_path = seed_paths(Path(folder), key)
    if not meta_path.is_file() or not data_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != SEED_FORMAT or meta.get("key") != key or meta.get("holdout"):
            return None
        return Seed(key, load_file(str(data_path)), meta)
    except Exception as e:  # noqa: BLE001  # any damage: compute, never trust it
        log.warning("shipped privacy reference %s unreadable (%s); computing", key, type(e).__name__)
        return None


def write_seed(folder: str | Path, key: str, checker: MemorizationChecker, digests: dict[str, int],
               n_errors: int = 0) -> list[Path]:
    """Write the seed of ``checker`` (a training side without holdout, computed in full) for
    ``key``; returns the files written."""
    from safetensors.numpy import save

    from synthkit.io.atomic import write_bytes, write_json
    from synthkit.privacy.audit.reference_cache import FORMAT, _state_arrays

    if checker.holdout is not None:
        raise ValueError("a seed is made for a training side without holdout")
    arrays = {k: v for k, v in _state_arrays(checker).items() if not _RECOMPUTED.fullmatch(k)}
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    meta_path, data_path = seed_paths(folder, key)
    write_bytes(data_path, save(arrays))
    write_json(meta_path, {"format": SEED_FORMAT, "cache_format": FORMAT, "key": key, "holdout": False,
                           "n_train": len(checker.train), "prepared_sha256": prepared_digest(checker.train.prepared),
                           "variants": len(checker.identity_ref.theta),
                           "query": checker.reference.identity.query is not None, "digests": digests,
                           "n_errors": n_errors})
    return [data_path, meta_path]
