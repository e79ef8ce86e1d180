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
* **DICOM** (:func:`write_dicom_series`) is built from scratch, never copied from a source
  file: new UIDs from :func:`pydicom.uid.generate_uid` fed only random tokens, empty type-2
  patient and study attributes, no dates, times, institution or device, PatientIdentityRemoved
  ``YES``, DeidentificationMethod and its code sequence (113100, DCM, "Basic Application
  Confidentiality Profile"), SyntheticData ``YES``, geometry converted from RAS to LPS.
"""

from __future__ import annotations

import gzip
import io
import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from synthkit.errors import SynthkitError, UsageError

ID_PREFIX = "syn_"
BASIC_PROFILE_CODE = ("113100", "DCM", "Basic Application Confidentiality Profile")
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


# --------------------------------------------------------------------------- DICOM
def _ds(x: float) -> str:
    """A DICOM DS string (at most 16 characters)."""
    for digits in range(10, 3, -1):
        s = f"{x:.{digits}g}"
        if len(s) <= 16:
            return s
    return f"{x:.3e}"


def _uid(rng: np.random.Generator) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(entropy_srcs=[rng.bytes(16).hex()]))


def _rescale(vol: np.ndarray) -> tuple[np.ndarray, float, float]:
    """int16 stored values and (slope, intercept) so that stored * slope + intercept ~ vol."""
    lo, hi = float(vol.min()), float(vol.max())
    if np.all(np.mod(vol, 1) == 0) and lo >= -32768 and hi <= 32767:
        return vol.astype(np.int16), 1.0, 0.0
    intercept = float(_ds((hi + lo) / 2))
    slope = float(_ds(max((hi - lo) / 65000.0, 1e-12)))
    stored = np.clip(np.rint((vol - intercept) / slope), -32768, 32767).astype(np.int16)
    return stored, slope, intercept


@dataclass(frozen=True)
class DicomStudy:
    """UIDs shared by every series of one synthetic case (one study, one frame of reference)."""

    study_uid: str
    frame_uid: str

    @classmethod
    def new(cls, rng: np.random.Generator) -> DicomStudy:
        return cls(_uid(rng), _uid(rng))


def write_dicom_series(
    folder: str | Path,
    volume: np.ndarray,
    affine: np.ndarray,
    *,
    rng: np.random.Generator,
    study: DicomStudy | None = None,
    series_number: int = 1,
    series_description: str = "synthetic",
    modality: Literal["MR", "CT"] = "MR",
) -> list[Path]:
    """Write one single-channel volume (D, H, W) or (1, D, H, W) as one DICOM series.

    Voxel ``(i, j, k)`` becomes column ``i``, row ``j`` of slice ``k`` (the convention of
    :func:`synthkit.io.read_dicom_series`, which reads the series back to the same volume and
    RAS affine). ``affine`` (4, 4) maps voxels to RAS mm; DICOM gets ``diag(-1, -1, 1) @ RAS``
    (LPS). The in-plane axes must be orthogonal. Files are ``IM000001.dcm``... in ``folder``;
    every UID comes from ``rng``, so equal seeds write equal bytes. Returns the file paths.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage

    from synthkit.io.atomic import write_bytes

    vol = np.asarray(volume, dtype=np.float64)
    if vol.ndim == 4 and vol.shape[0] == 1:
        vol = vol[0]
    if vol.ndim != 3:
        raise ValueError(f"write_dicom_series expects one channel (D, H, W), got {vol.shape}")
    if not np.all(np.isfinite(vol)):
        raise ValueError("volume holds NaN/Inf")
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=np.float64)
    col_step, row_step, slice_step, origin = lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3]
    dx, dy = float(np.linalg.norm(col_step)), float(np.linalg.norm(row_step))
    iop = np.concatenate([col_step / dx, row_step / dy])
    if abs(float(iop[:3] @ iop[3:])) > 1e-4:
        raise ValueError("the affine's first two axes are not orthogonal; DICOM cannot store that plane")
    study = study or DicomStudy.new(rng)
    series_uid = _uid(rng)
    stored, slope, intercept = _rescale(vol)
    sop_class = MRImageStorage if modality == "MR" else CTImageStorage
    thickness = float(np.linalg.norm(slice_step))
    folder = Path(folder)
    paths = []
    for k in range(vol.shape[2]):
        meta = FileMetaDataset()
        sop_uid = _uid(rng)
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study.study_uid, series_uid, study.frame_uid
        # patient and study: type-2 attributes present but empty (PS3.15 action Z), no dates
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                   "ReferringPhysicianName", "StudyID", "AccessionNumber", "Manufacturer",
                   "PositionReferenceIndicator"):
            setattr(ds, kw, "")
        ds.PatientIdentityRemoved = "YES"
        ds.DeidentificationMethod = "synthkit synthetic image; PS3.15 Basic Profile"
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = BASIC_PROFILE_CODE
        ds.DeidentificationMethodCodeSequence = Sequence([code])
        ds.SyntheticData = "YES"
        ds.BurnedInAnnotation = "NO"
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.Modality = modality
        ds.SeriesNumber = series_number
        ds.SeriesDescription = series_description[:64]
        ds.InstanceNumber = k + 1
        if modality == "MR":
            ds.ScanningSequence, ds.SequenceVariant, ds.MRAcquisitionType = "RM", "NONE", "3D"
            ds.ScanOptions = ""
        else:
            ds.KVP = ""
        # geometry (Image Plane module)
        ds.ImageOrientationPatient = [_ds(v) for v in iop]
        ds.ImagePositionPatient = [_ds(v) for v in origin + k * slice_step]
        ds.PixelSpacing = [_ds(dy), _ds(dx)]  # (row spacing, column spacing)
        ds.SliceThickness = _ds(thickness)
        ds.SpacingBetweenSlices = _ds(thickness)
        # pixels: rows = j, columns = i
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = int(vol.shape[1]), int(vol.shape[0])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = _ds(slope), _ds(intercept)
        if modality == "CT":
            ds.RescaleType = "HU"
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
        buf = io.BytesIO()
        pydicom.dcmwrite(buf, ds, enforce_file_format=True)
        paths.append(write_bytes(folder / f"IM{k + 1:06d}.dcm", buf.getvalue()))
    return paths


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
