"""Preprocess a cohort once, keep the tensors on disk, train from memory.

:func:`cache_cohort` runs :func:`synthkit.preprocess.preprocess_case` on every case and stores
the result in ``cache_dir`` as two files per case, named by a key (BLAKE2 hash of the
preprocessing config, the cache format and the *contents* of the case's files):

* ``<key>.safetensors``: ``image`` ``(C, D, H, W)`` float32 (absent for a mask-only case) and
  ``labels`` ``(D, H, W)`` int16;
* ``<key>.json``: the :class:`~synthkit.preprocess.GridRecord` (written last: its presence
  marks a complete entry).

Nothing stored names the case (file names are hashes; no case ids, paths or headers), and no
pickle is involved. A rerun with the same files and config reads the cache instead of the
NIfTI files; a changed file or config gives a new key. Writes are atomic.
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch.utils.data import Dataset

from synthkit.config import PreprocessConfig, to_dict
from synthkit.errors import CohortError, SynthkitError
from synthkit.io.atomic import write_bytes, write_json
from synthkit.io.hashing import update_from_file
from synthkit.preprocess import GridRecord, Preprocessed, one_hot, preprocess_case
from synthkit.progress import progress_hook

if TYPE_CHECKING:
    from synthkit.io.cohort import Case, Cohort

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


class CachedCohort(Dataset):
    """A preprocessed cohort held in memory.

    ``self[i]`` is ``{"image": (C, D, H, W) float32 in [-1, 1], "cond": (K, D, H, W) float32
    one-hot (background dropped, order of ``cfg.mask_labels``), "labels": (D, H, W) int64,
    "index": i}``; ``"image"`` is absent for a mask-only cohort. ``records[i]`` maps case ``i``
    back to its own grid; ``case_ids[i]`` names it; ``skipped`` lists ``(case_id, reason)`` for
    cases that could not be used.
    """

    def __init__(
        self,
        images: torch.Tensor | None,
        labels: torch.Tensor,
        records: list[GridRecord],
        case_ids: list[str],
        cfg: PreprocessConfig,
        skipped: list[tuple[str, str]] | None = None,
    ):
        if len(records) != labels.shape[0] or len(case_ids) != labels.shape[0]:
            raise ValueError("records, case_ids and labels disagree in length")
        self.images = images  # (N, C, D, H, W) float32 or None
        self.labels = labels  # (N, D, H, W) int16
        self.records = records
        self.case_ids = case_ids
        self.cfg = cfg
        self.skipped = list(skipped or [])

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def image_channels(self) -> int:
        return 0 if self.images is None else int(self.images.shape[1])

    @property
    def mask_classes(self) -> int:
        return len(self.cfg.mask_labels)

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(i)
        i = i % len(self)
        labels = self.labels[i].to(torch.int64)
        item: dict[str, Any] = {
            "cond": one_hot(labels, tuple(self.cfg.mask_labels)),
            "labels": labels,
            "index": i,
        }
        if self.images is not None:
            item["image"] = self.images[i]
        return item


def _hash_path(h: Any, path: Path) -> None:
    """Feed a file's (or a DICOM folder's files') contents into hash ``h``."""
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(f.name.encode() if path.is_dir() else b"\0")
        update_from_file(h, f)
        h.update(b"\1")


def case_key(case: Case, cfg: PreprocessConfig) -> str:
    """Cache key of a case: hash of the config, the cache format and the files' contents."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"format": CACHE_FORMAT, "cfg": to_dict(cfg)}, sort_keys=True).encode())
    for p in case.images:
        h.update(b"image")
        _hash_path(h, Path(p))
    if case.mask is not None:
        h.update(b"mask")
        _hash_path(h, Path(case.mask))
    return h.hexdigest()


def _save(cache_dir: Path, key: str, pre: Preprocessed) -> None:
    from safetensors.numpy import save

    tensors = {"labels": pre.labels.numpy().astype(np.int16)}
    if pre.image is not None:
        tensors["image"] = pre.image.numpy()
    write_bytes(cache_dir / f"{key}.safetensors", save(tensors))
    write_json(cache_dir / f"{key}.json", {"format": CACHE_FORMAT, "record": pre.record.to_dict()})


def _load(cache_dir: Path, key: str) -> tuple[np.ndarray | None, np.ndarray, GridRecord] | None:
    from safetensors.numpy import load_file

    meta_path, data_path = cache_dir / f"{key}.json", cache_dir / f"{key}.safetensors"
    if not meta_path.is_file() or not data_path.is_file():
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("format") != CACHE_FORMAT:
            return None
        record = GridRecord.from_dict(meta["record"])
        arrays = load_file(str(data_path))
        return arrays.get("image"), arrays["labels"], record
    except Exception as e:  # noqa: BLE001  # any damage: recompute, never trust the entry
        log.warning("cache entry %s unreadable (%s); recomputing", key, type(e).__name__)
        return None


def cache_cohort(
    cohort: Cohort,
    cfg: PreprocessConfig,
    cache_dir: str | Path,
    *,
    progress: Any = None,
    strict: bool = False,
) -> CachedCohort:
    """Preprocess every usable case of ``cohort`` (reusing ``cache_dir``) and load all in memory.

    A case that cannot be read or preprocessed (a :class:`SynthkitError`, e.g. unreadable file,
    mismatched grids, unexpected labels, no mask, a channel count unlike the others) is logged,
    warned about and listed in ``result.skipped``; with ``strict=True`` it raises
    :class:`CohortError` instead. No usable case at all raises :class:`CohortError`.
    ``progress``: ``None``, a rich ``Progress`` or a callable ``(done, total)``.
    """
    from synthkit.io.cohort import read_image, read_mask

    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    step = progress_hook(progress, len(cohort.cases), "preprocessing")
    images: list[np.ndarray | None] = []
    labels: list[np.ndarray] = []
    records: list[GridRecord] = []
    ids: list[str] = []
    skipped: list[tuple[str, str]] = []
    n_channels: int | None = None

    for case in cohort.cases:
        try:
            if case.problems:
                raise CohortError("; ".join(case.problems))
            if case.mask is None:
                raise CohortError("case has no mask")
            key = case_key(case, cfg)
            hit = _load(cache_dir, key)
            if hit is None:
                image = read_image(case) if getattr(cohort, "has_images", True) else None
                pre = preprocess_case(image, read_mask(case), cfg)
                _save(cache_dir, key, pre)
                img = pre.image.numpy() if pre.image is not None else None
                lab, rec = pre.labels.numpy().astype(np.int16), pre.record
            else:
                img, lab, rec = hit
            c = 0 if img is None else int(img.shape[0])
            if n_channels is None:
                n_channels = c
            elif c != n_channels:
                raise CohortError(
                    f"{c} image channel(s) where the cohort's first case has {n_channels}"
                )
        except SynthkitError as e:
            if strict:
                raise CohortError(f"case {case.case_id}: {e}") from e
            msg = str(e)
            log.warning("skipping case %s: %s", case.case_id, msg)
            warnings.warn(f"skipping case {case.case_id}: {msg}", stacklevel=2)
            skipped.append((case.case_id, msg))
        else:
            images.append(img)
            labels.append(lab)
            records.append(rec)
            ids.append(case.case_id)
        step()

    if not ids:
        raise CohortError(
            "no usable case in the cohort" + (f" ({len(skipped)} skipped)" if skipped else ""),
            cohort.root,
        )
    image_t = None if n_channels == 0 else torch.from_numpy(np.stack(images))  # type: ignore[arg-type]
    return CachedCohort(image_t, torch.from_numpy(np.stack(labels)), records, ids, cfg, skipped)
