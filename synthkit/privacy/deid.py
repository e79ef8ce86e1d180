"""De-identification of what synthkit writes: fresh opaque case ids, scrubbed NIfTI files,
DICOM export under the PS3.15 Basic Application Level Confidentiality Profile, and a scanner
that looks for identifiers in every output path and byte.

* **Case ids** come from a seeded generator (:func:`fresh_case_ids`): ``syn_`` + 12 hex digits,
  no trace of the input names. Which output came from which input is written only on request
  (:func:`write_mapping`), never inside the output folder (:func:`check_mapping_path`).
* **NIfTI** goes through :func:`write_deidentified_nifti`: a fresh header (no description,
  aux file, intent name, db name, extensions; gzip without file name or time stamp), then
  re-read and verified (:func:`nifti_header_problems`). Masks are patient-derived too and
  take the same path.
* **DICOM** (:func:`write_dicom_series`, from :mod:`synthkit.privacy.dicom_export`) is built
  from scratch under the PS3.15 Basic Profile and passes dicom3tools' ``dciodvfy`` without
  errors (integer pixels with a Real World Value Mapping, no Modality LUT on MR).
"""

from __future__ import annotations

import gzip
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from synthkit.errors import SynthkitError, UsageError
from synthkit.privacy.dicom_export import (  # noqa: F401  (re-exported: the DICOM writer's old home)
    BASIC_PROFILE_CODE,
    DicomStudy,
    ValueMapping,
    value_mapping,
    write_dicom_series,
)

ID_PREFIX = "syn_"
_CLEAN_FIELDS = ("descrip", "aux_file", "intent_name", "db_name")


class DeidError(SynthkitError):
    """An output would carry (or does carry) identifying information."""


# --------------------------------------------------------------------------- ids and mapping
def fresh_case_ids(n: int, rng: np.random.Generator, *, prefix: str = ID_PREFIX, digits: int = 12) -> list[str]:
    """``n`` distinct opaque ids ``prefix + hex`` drawn from ``rng`` (input names play no part)."""
    if digits < 6 or digits % 2:
        raise ValueError("digits must be an even number >= 6")
    out: list[str] = []
    seen: set[str] = set()
    while len(out) < n:
        cid = prefix + rng.bytes(digits // 2).hex()
        if cid not in seen:
            seen.add(cid)
            out.append(cid)
    return out


def _inside(path: Path, folder: Path) -> bool:
    p, f = path.expanduser().resolve(), folder.expanduser().resolve()
    return p == f or f in p.parents


def check_mapping_path(mapping: str | Path, out: str | Path) -> Path:
    """The mapping file path, refusing one inside the output folder ``out`` (UsageError)."""
    m = Path(mapping)
    if _inside(m, Path(out)):
        raise UsageError(
            "the input->output id mapping must be written outside the output folder "
            f"({out}), or the shared cohort would carry the link back to patients", m)
    if m.exists() and m.is_dir():
        raise UsageError("mapping path is a folder; give a file name", m)
    return m


def write_mapping(mapping: str | Path, out: str | Path, pairs: dict[str, str]) -> Path:
    """Write ``{input id: output id}`` as JSON to ``mapping`` (outside ``out``), atomically."""
    from synthkit.io.atomic import write_json

    m = check_mapping_path(mapping, out)
    return write_json(m, {"note": "links synthetic case ids to input cases; keep it private",
                          "mapping": dict(sorted(pairs.items()))})


# --------------------------------------------------------------------------- NIfTI
def nifti_header_problems(path: str | Path) -> list[str]:
    """What in ``path``'s NIfTI header (or gzip wrapper) could carry information: non-empty
    descrip / aux_file / intent_name / db_name, header extensions, a gzip file name or time
    stamp. Empty list when clean."""
    import nibabel as nib

    path = Path(path)
    problems: list[str] = []
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        flags, mtime = raw[3], int.from_bytes(raw[4:8], "little")
        if flags & 0x08:
            problems.append("gzip header stores a file name")
        if flags & 0x10:
            problems.append("gzip header stores a comment")
        if mtime:
            problems.append("gzip header stores a time stamp")
    img = nib.load(str(path))
    hdr = img.header
    for field in _CLEAN_FIELDS:
        value = bytes(np.asarray(hdr[field]).tobytes()).strip(b"\x00 ")
        if value:
            problems.append(f"{field} is not empty")
    if len(hdr.extensions):
        problems.append(f"{len(hdr.extensions)} header extension(s)")
    return problems


def write_deidentified_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray, *,
                             is_label: bool = False) -> Path:
    """Write ``data`` (C, D, H, W) or (D, H, W) with a fresh header via
    :func:`synthkit.io.write_nifti`, then verify it; :class:`DeidError` if anything is left."""
    from synthkit.io import write_nifti

    out = write_nifti(path, data, affine, is_label=is_label)
    problems = nifti_header_problems(out)
    if problems:
        out.unlink(missing_ok=True)
        raise DeidError("written NIfTI is not clean: " + "; ".join(problems), out)
    return out


# --------------------------------------------------------------------------- scanning
@dataclass(frozen=True)
class Hit:
    """``needle`` found in ``path``: in its name (``where="path"``) or bytes (``"content"``;
    ``offset`` into the decompressed bytes for .gz files)."""

    path: Path
    where: Literal["path", "content"]
    needle: str
    offset: int = -1


def _decompressed(raw: bytes) -> bytes | None:
    if raw[:2] != b"\x1f\x8b":
        return None
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error):
        return None


def scan_for_identifiers(folder: str | Path, needles: list[str] | tuple[str, ...]) -> list[Hit]:
    """Every occurrence of any ``needle`` (case-insensitive) in the paths below ``folder``
    (relative, every component) and in every file's bytes, gzip files decompressed (the raw
    bytes are searched too). Needles are searched as UTF-8 and as UTF-16-LE."""
    root = Path(folder)
    wanted = [n for n in needles if n]
    hits: list[Hit] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            rel = str((Path(dirpath) / name).relative_to(root)).lower()
            hits += [Hit(Path(dirpath) / name, "path", n) for n in wanted if n.lower() in rel]
        for name in filenames:
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            raw = p.read_bytes()
            blobs = [raw] + [b for b in (_decompressed(raw),) if b is not None]
            for n in wanted:
                forms = {n.lower().encode("utf-8"), n.lower().encode("utf-16-le")}
                for blob in blobs:
                    low = blob.lower()
                    found = [low.find(f) for f in forms if low.find(f) >= 0]
                    if found:
                        hits.append(Hit(p, "content", n, min(found)))
                        break
    return hits
