"""De-identified outputs: fresh opaque case ids, scrubbed NIfTI files, and an output geometry
that is not the source's.

* **Case ids** come from a seeded generator (:func:`fresh_case_ids`): ``syn_`` + 12 hex digits,
  no trace of the input names. Which output came from which input is written only on request
  (:func:`write_mapping`), never inside the output folder (:func:`check_mapping_path`).
* **NIfTI** goes through :func:`write_deidentified_nifti`: a fresh header (no description,
  aux file, intent name, db name, extensions; gzip without file name or time stamp), then
  re-read and verified (:func:`nifti_header_problems`). Masks are patient-derived too and
  take the same path.
* **Geometry**: :func:`canonical_affine` keeps the voxels and the anatomical orientation and
  drops the scanner position and obliquity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from synthkit.errors import SynthkitError, UsageError

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


# --------------------------------------------------------------------------- geometry
def canonical_affine(affine: np.ndarray, shape: tuple[int, ...], *, spacing_decimals: int = 2) -> np.ndarray:
    """An output affine that does not repeat the source scan's exact geometry.

    Each voxel axis is mapped to the world axis it is closest to (nibabel's
    ``io_orientation``; signed axis permutation, so the anatomical orientation is kept), voxel
    sizes are rounded to ``spacing_decimals`` decimals (0.01 mm), and the origin is put so that
    the centre of the ``shape`` (D, H, W[, ...]: the first three entries are used) grid lies at
    world (0, 0, 0). The scanner position and any obliquity are dropped; the voxel data are
    not touched (an oblique scan is relabelled, not resampled). Returns a (4, 4) float64.
    """
    import nibabel.orientations as nio

    a = np.asarray(affine, dtype=np.float64)
    if a.shape != (4, 4) or not np.all(np.isfinite(a)):
        raise ValueError(f"affine must be a finite (4, 4) matrix, got shape {a.shape}")
    spacing = np.sqrt((a[:3, :3] ** 2).sum(axis=0))
    if np.any(spacing <= 0):
        raise ValueError("affine has a zero-length voxel axis")
    step = 10.0 ** -spacing_decimals
    spacing = np.maximum(np.round(spacing, spacing_decimals), step)
    ornt = nio.io_orientation(a)
    lin = np.zeros((3, 3))
    for axis, (world, sign) in enumerate(ornt):
        lin[int(world), axis] = sign * spacing[axis]
    centre = (np.asarray(shape[:3], dtype=np.float64) - 1) / 2
    out = np.eye(4)
    out[:3, :3] = lin
    out[:3, 3] = -lin @ centre
    return out
