"""Which strings of an input cohort identify someone, and where they turn up in an output folder.

**Needles** (:func:`identifier_needles`) come from every file of the input cohort:

* every value of every DICOM element whose VR is PN, LO, SH, DA, DT, TM, UI or AS, in every
  file of every series (sequences and private elements included), with the components of each
  person name; left out are standard UIDs (root ``1.2.840.10008.``, the same in any file) and
  coded-concept fields (CodeValue, CodingSchemeDesignator, CodeMeaning, ...), which name
  concepts, not people;
* NIfTI header text (descrip, aux_file, intent_name, db_name) and short header extensions;
* path components below the cohort root (case ids, file and folder names without suffixes),
  except the layout's own folder names (imagesTr, labelsTr, ...) and generic slice names
  (``IM000001``);
* never the words synthkit writes itself ("synthetic ...", "synthkit"), so that a cohort
  synthkit exported can go through it again.

The needle collection **fails closed**: a NIfTI file whose header cannot be read, or a file that
says it is DICOM (``DICM`` at byte 128) but cannot be parsed, raises
:class:`IdentifierScanError` naming the file, never leaves its identifiers unsearched. (Other
files inside a DICOM series folder, e.g. a ``DICOMDIR`` or notes, are searched by path only.)

**Matching** (:func:`scan_for_identifiers`), case-insensitive:

* a *long* needle (:data:`LONG_NEEDLE` characters or more) anywhere in a file's bytes, as
  UTF-8 and UTF-16-LE, gzip files also decompressed, and anywhere in the output's relative
  paths; a long needle made only of digits (a date, a numeric id) must not touch other digits
  (``20200101`` is not found inside ``1202001011``);
* a *short* needle (:data:`MIN_NEEDLE` up to ``LONG_NEEDLE - 1`` characters, e.g. a 4-digit
  PatientID) only as a whole token: not next to a letter or digit, and not next to a decimal
  point that continues a number (``0042`` is found in ``case_0042.nii.gz`` and ``"id": "0042"``,
  not in ``PAT0042`` or ``0.0042``), and only in text: path components, DICOM element values,
  NIfTI header text, files that decode as UTF-8 / UTF-16 text (base64 payloads in data URIs
  left out). Image bytes are never searched for short needles, where chance matches abound.
"""

from __future__ import annotations

import gzip
import io
import os
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from synthkit.errors import SynthkitError

MIN_NEEDLE = 3
LONG_NEEDLE = 6
TEXT_VRS = frozenset({"PN", "LO", "SH", "DA", "DT", "TM", "UI", "AS"})
STANDARD_UID_ROOT = "1.2.840.10008."
_CONCEPT_KEYWORDS = frozenset({
    "CodeValue", "CodingSchemeDesignator", "CodingSchemeVersion", "CodeMeaning", "LongCodeValue",
    "URNCodeValue", "ContextIdentifier", "ContextUID", "MappingResource", "MappingResourceUID",
    "MappingResourceName", "ContextGroupVersion", "ContextGroupLocalVersion", "CodingSchemeUID",
    "CodingSchemeName", "CodingSchemeResponsibleOrganization", "SpecificCharacterSet",
    "LUTLabel", "LUTExplanation", "DeidentificationMethod",
})
#: What synthkit writes itself (an input that synthkit exported must not match its own output).
_OWN_VOCABULARY = frozenset({"synthkit", "synthetic", "synthetic intensity", "no units", "syn_"})
_LAYOUT_WORDS = frozenset({"imagestr", "labelstr", "imagests", "labelsts", "images", "labels", "masks", "mask",
                           "image", "dicom", "nifti", "dataset", "data"})
_GENERIC_SLICE = re.compile(r"^(im|img|i|mr|ct|slice|file)?[_-]?\d+$", re.IGNORECASE)
_NIFTI_TEXT = ("descrip", "aux_file", "intent_name", "db_name")
_DATA_URI = re.compile(r"base64,[A-Za-z0-9+/=\s]+")
_PREFIX_CHARS = 4  # characters of a long needle looked for first (see _find_long)




class IdentifierScanError(SynthkitError):
    """An input file whose identifiers cannot be read: the scan cannot vouch for the output."""


# --------------------------------------------------------------------------- needles
def _person_name_parts(value: Any) -> list[str]:
    s = str(value)
    parts = [s, s.replace("^", " ")]
    for group in s.split("="):
        parts += [p for p in group.split("^") if p]
    return parts


def _values(value: Any) -> list[Any]:
    from pydicom.multival import MultiValue

    return list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]


def dicom_values(ds: Any) -> list[str]:
    """Every PN/LO/SH/DA/DT/TM/UI/AS value of a pydicom dataset (nested sequences included),
    without standard UIDs and coded-concept fields."""
    out: list[str] = []
    for elem in ds.iterall():
        if elem.VR not in TEXT_VRS or elem.keyword in _CONCEPT_KEYWORDS or elem.value is None:
            continue
        for v in _values(elem.value):
            if isinstance(v, bytes):
                v = v.decode("latin-1", "replace")
            if elem.VR == "PN":
                out += _person_name_parts(v)
            elif elem.VR == "UI" and str(v).startswith(STANDARD_UID_ROOT):
                continue
            else:
                out.append(str(v))
    return out


def nifti_text(path: Path, *, strict: bool = False) -> list[str]:
    """NIfTI header text fields and header extensions of up to 256 characters. A file that
    cannot be read as NIfTI gives nothing, or with ``strict`` raises :class:`IdentifierScanError`
    (the input side of the scan must not skip a file; an output file is searched as bytes too)."""
    import nibabel as nib

    try:
        hdr = nib.load(str(path)).header
    except Exception as e:  # noqa: BLE001 - nibabel raises many kinds for a damaged file
        if strict:
            raise IdentifierScanError(f"cannot read the NIfTI header to collect its identifiers "
                                      f"({type(e).__name__}); fix or remove the file", path) from None
        return []
    out = []
    for fld in _NIFTI_TEXT:
        try:
            out.append(bytes(np.asarray(hdr[fld]).tobytes()).strip(b"\x00 ").decode("latin-1"))
        except (KeyError, ValueError):
            continue
    for ext in getattr(hdr, "extensions", []):
        raw = ext.get_content() if hasattr(ext, "get_content") else b""
        if isinstance(raw, bytes):
            text = raw.strip(b"\x00 ").decode("latin-1", "replace")
            if 0 < len(text) <= 256:
                out.append(text)
    return out


def _component_needles(path: Path, root: Path) -> list[str]:
    from synthkit.io.nifti import strip_nifti_suffix

    try:
        parts = path.resolve().relative_to(root.resolve()).parts
    except ValueError:
        parts = (path.name,)
    out = []
    for part in parts:
        stem = strip_nifti_suffix(part)
        stem = stem[:-4] if stem.lower().endswith(".dcm") else stem
        if stem.lower() in _LAYOUT_WORDS or _GENERIC_SLICE.match(stem):
            continue
        out.append(stem)
    return out


def _says_dicom(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:] == b"DICM"


def _dicom_file_values(path: Path, *, strict: bool = True) -> list[str]:
    """Identifier values of one DICOM file; a file that is not DICOM gives nothing, one that
    says it is (``DICM`` preamble) but cannot be parsed raises with ``strict``."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        ds = pydicom.dcmread(str(path), stop_before_pixels=True)
    except (InvalidDicomError, OSError, ValueError, EOFError, AttributeError, KeyError, TypeError) as e:
        if strict and _says_dicom(path):
            raise IdentifierScanError(f"cannot parse the DICOM file to collect its identifiers "
                                      f"({type(e).__name__}); fix or remove the file", path) from None
        return []
    return dicom_values(ds)


def identifier_needles(cohort: Any, *, exclude: Iterable[str] = ()) -> list[str]:
    """Strings of the input ``cohort`` (a discovered :class:`synthkit.io.Cohort`) that must never
    appear in an output (see the module text). ``exclude``: values that are not identifying
    here and that outputs legitimately carry (e.g. channel and label names), dropped
    case-insensitively. Sorted, distinct, each at least :data:`MIN_NEEDLE` characters.

    Raises :class:`IdentifierScanError` (one line naming the file) for an input file whose
    identifiers cannot be read (see the module text): the scan fails closed."""
    from synthkit.io.nifti import is_nifti

    root = Path(cohort.root)
    found: list[str] = []
    for case in cohort.cases:
        found.append(case.case_id)
        for p in [*case.images, *([case.mask] if case.mask else [])]:
            p = Path(p)
            found += _component_needles(p, root)
            if p.is_dir():
                for f in sorted(p.rglob("*")):
                    if f.is_file() and not f.name.startswith("."):
                        found += _dicom_file_values(f)
                        if not _GENERIC_SLICE.match(f.name.split(".")[0]):
                            found += _component_needles(f, root)
            elif p.is_file():
                found += nifti_text(p, strict=True) if is_nifti(p) else _dicom_file_values(p)
    drop = {e.strip().lower() for e in exclude}
    out: dict[str, str] = {}
    for s in found:
        s = s.replace("\x00", "").strip()
        low = s.lower()
        if len(s) < MIN_NEEDLE or low in drop or low in _LAYOUT_WORDS or low in _OWN_VOCABULARY:
            continue
        if not low.startswith("synthetic "):
            out.setdefault(s.lower(), s)
    return sorted(out.values())


# --------------------------------------------------------------------------- matching
@dataclass(frozen=True)
class Hit:
    """``needle`` found in ``path``: in its name (``where="path"``) or its content
    (``"content"``; ``offset`` into the (decompressed) bytes for a long needle, -1 for a token
    found in a text part). ``part`` says which: ``path``, ``bytes``, ``gzip``, ``dicom``,
    ``nifti header`` or ``text``."""

    path: Path
    where: Literal["path", "content"]
    needle: str
    offset: int = -1
    part: str = ""


def token_pattern(needle: str) -> re.Pattern[str]:
    """``needle`` as a whole token (case-insensitive), see the module text."""
    return re.compile(r"(?<![0-9a-z])(?<![0-9]\.)" + re.escape(needle.lower()) + r"(?![0-9a-z])(?!\.[0-9])")


def _decompressed(raw: bytes) -> bytes | None:
    if raw[:2] != b"\x1f\x8b":
        return None
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error):
        return None


def _as_text(blob: bytes) -> str | None:
    """The blob decoded as text, or None for binary data."""
    if b"\x00" not in blob[:1 << 16]:
        try:
            return blob.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if blob[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(blob) % 2 == 0 and blob[1::2].count(0) > 0.9 * (len(blob) // 2)):
        try:
            text = blob.decode("utf-16" if blob[:2] in (b"\xff\xfe", b"\xfe\xff") else "utf-16-le")
        except UnicodeDecodeError:
            return None
        return text if sum(c.isprintable() or c.isspace() for c in text) > 0.95 * len(text) else None
    return None


def _text_parts(path: Path, raw: bytes, blobs: list[tuple[str, bytes]]) -> list[tuple[str, str]]:
    """(part name, text) of a file where short needles are searched as tokens."""
    from synthkit.io.nifti import is_nifti

    if len(raw) > 132 and raw[128:132] == b"DICM":
        import pydicom

        try:
            ds = pydicom.dcmread(io.BytesIO(raw), stop_before_pixels=True)
        except Exception:  # noqa: BLE001 - a broken DICOM is searched as bytes only
            return []
        values = []
        for elem in [*ds.file_meta.iterall(), *ds.iterall()]:
            if elem.VR not in ("OB", "OW", "OF", "OD", "OL", "UN", "SQ") and elem.value is not None:
                values.append(str(elem.value))
        return [("dicom", "\n".join(values))]
    if is_nifti(path):
        return [("nifti header", "\n".join(nifti_text(path)))]
    out = []
    for name, blob in blobs:
        text = _as_text(blob)
        if text is not None:
            out.append(("text" if name == "bytes" else f"text ({name})", _DATA_URI.sub("base64,", text)))
    return out


def _find_long(needle: str, low: bytes, present: dict[bytes, bool]) -> int:
    """The first offset of ``needle`` in ``low`` (a blob already lower-cased with ``bytes.lower``),
    as UTF-8 or UTF-16-LE, or -1. ``present`` memoises which short prefixes occur in ``low``: a
    form whose first bytes do not occur cannot occur, so a file is searched once per distinct
    prefix (most needles share one, e.g. ``case``) rather than once per needle."""
    forms, text = [], needle.lower()
    for enc in ("utf-8", "utf-16-le"):
        f, head = text.encode(enc), text[:_PREFIX_CHARS].encode(enc)
        if head not in present:
            present[head] = low.find(head) >= 0
        if present[head]:
            forms.append(f)
    if not forms:
        return -1
    if needle.isdigit():
        hits = [m.start() for f in forms for m in [re.search(rb"(?<![0-9])" + re.escape(f) + rb"(?![0-9])", low)] if m]
    else:
        hits = [i for i in (low.find(f) for f in forms) if i >= 0]
    return min(hits) if hits else -1


def _split_needles(needles: Iterable[str]) -> tuple[list[str], list[str]]:
    seen: dict[str, str] = {}
    for n in needles:
        n = (n or "").strip()
        if len(n) >= MIN_NEEDLE:
            seen.setdefault(n.lower(), n)
    wanted = list(seen.values())
    return [n for n in wanted if len(n) >= LONG_NEEDLE], [n for n in wanted if len(n) < LONG_NEEDLE]


def scan_for_identifiers(folder: str | Path, needles: Iterable[str]) -> list[Hit]:
    """Every occurrence of any needle below ``folder`` (paths and contents; see the module
    text for long vs short needles). Needles shorter than :data:`MIN_NEEDLE` are ignored."""
    root = Path(folder)
    long_n, short_n = _split_needles(needles)
    tokens = {n: token_pattern(n) for n in short_n + [n for n in long_n if n.isdigit()]}
    hits: list[Hit] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root)).lower()
            hits += [Hit(p, "path", n, -1, "path") for n in long_n if not n.isdigit() and n.lower() in rel]
            hits += [Hit(p, "path", n, -1, "path") for n, pat in tokens.items() if pat.search(rel)]
        for name in sorted(filenames):
            p = Path(dirpath) / name
            if p.is_symlink() or not p.is_file():
                continue
            hits += _scan_file(p, long_n, short_n, tokens)
    return hits


def _scan_file(p: Path, long_n: list[str], short_n: list[str], tokens: dict[str, re.Pattern[str]]) -> list[Hit]:
    raw = p.read_bytes()
    blobs = [("bytes", raw)] + [("gzip", b) for b in (_decompressed(raw),) if b is not None]
    lowered = [(name, blob.lower(), {}) for name, blob in blobs] if long_n else []  # once per blob, not per needle
    hits = []
    for n in long_n:
        for name, low, present in lowered:
            off = _find_long(n, low, present)
            if off >= 0:
                hits.append(Hit(p, "content", n, off, name))
                break
    if short_n:
        parts = _text_parts(p, raw, blobs)
        for n in short_n:
            where = next((name for name, text in parts if tokens[n].search(text.lower())), None)
            if where is not None:
                hits.append(Hit(p, "content", n, -1, where))
    return hits
