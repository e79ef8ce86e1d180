"""NIfTI reading and writing.

Reading returns a :class:`~synthkit.io.volume.Volume` with channels first:

* a 3D file ``(X, Y, Z)`` becomes ``(1, X, Y, Z)``;
* a 4D file ``(X, Y, Z, C)`` becomes ``(C, X, Y, Z)`` (several channels in one file);
* a 5D file ``(X, Y, Z, 1, C)`` (NIfTI vector intent) becomes ``(C, X, Y, Z)``.

Anything else, and any file that cannot be parsed or whose voxel data is cut short, raises
:class:`~synthkit.errors.CohortError` naming the file.

Writing (:func:`write_nifti`) always builds a fresh header: qform and sform both set from the
affine with code 1 (scanner), units mm, no description, aux file, intent name, db name or
extensions, so nothing from a source header (which may hold patient information) is carried
over. The gzip stream is written without a file name and with mtime 0, so equal inputs give
byte-identical files, and the write is atomic.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from synthkit.errors import CohortError, UsageError
from synthkit.io.atomic import write_bytes
from synthkit.io.volume import Volume

NIFTI_SUFFIXES = (".nii.gz", ".nii")
_INT16 = np.iinfo(np.int16)


def is_nifti(path: str | Path) -> bool:
    """True for names ending in ``.nii`` or ``.nii.gz`` (case-insensitive), hidden files excluded."""
    name = Path(path).name
    return not name.startswith(".") and name.lower().endswith(NIFTI_SUFFIXES)


def strip_nifti_suffix(name: str) -> str:
    """``"case_001.nii.gz"`` -> ``"case_001"``."""
    low = name.lower()
    for suf in NIFTI_SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)]
    return name


def nifti_suffix(name: str) -> str:
    """The NIfTI suffix of ``name`` as written (``".nii.gz"`` or ``".nii"``), else ``""``."""
    low = name.lower()
    for suf in NIFTI_SUFFIXES:
        if low.endswith(suf):
            return name[-len(suf):]
    return ""


def _load(path: Path):
    import nibabel as nib

    if not path.exists():
        raise CohortError("file not found", path)
    if not path.is_file():
        raise CohortError("not a file", path)
    _check_header_bytes(path)
    try:
        return nib.load(str(path), mmap=False)
    except Exception as e:  # nibabel raises several types for garbage headers
        if path.name.lower().endswith(".gz") and _gzip_broken(path):
            raise CohortError("truncated or corrupt file (gzip stream ends early)", path) from e
        why = _reason(e).replace(f'"{path}"', path.name).replace(str(path), path.name)
        raise CohortError(f"unreadable NIfTI header ({why})", path) from e


def _gzip_broken(path: Path) -> bool:
    """True when the gzip stream of ``path`` cannot be decompressed to its end."""
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except (EOFError, OSError, zlib.error):
        return True
    return False


def _check_header_bytes(path: Path) -> None:
    """Read the first bytes ourselves so that a cut-short or non-NIfTI file gets a clear
    reason (nibabel only says it cannot work out the file type)."""
    try:
        if path.name.lower().endswith(".gz"):
            with gzip.open(path, "rb") as fh:
                head = fh.read(348)
        else:
            with open(path, "rb") as fh:
                head = fh.read(348)
    except (EOFError, OSError, zlib.error) as e:
        raise CohortError(f"truncated or corrupt file ({_reason(e)})", path) from e
    if len(head) < 4:
        raise CohortError("empty or truncated file (no header)", path)
    sizeof_hdr = {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")}
    if not sizeof_hdr & {348, 540}:
        raise CohortError("not a NIfTI file", path)
    if len(head) < 348:
        raise CohortError(f"truncated file (header is {len(head)} of 348 bytes)", path)


def _reason(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _channels_first(arr: np.ndarray, path: Path) -> np.ndarray:
    """``(X,Y,Z)`` / ``(X,Y,Z,C)`` / ``(X,Y,Z,1,C)`` -> ``(C, X, Y, Z)``."""
    if arr.ndim == 5 and arr.shape[3] == 1:
        arr = arr[:, :, :, 0, :]
    if arr.ndim == 3:
        return arr[None]
    if arr.ndim == 4:
        return np.moveaxis(arr, -1, 0)
    raise CohortError(f"not a 3D volume: {arr.ndim}D with shape {tuple(arr.shape)}", path)


def read_nifti(path: str | Path, *, is_label: bool = False) -> Volume:
    """Read a NIfTI file.

    Returns a :class:`Volume` with ``data`` ``(C, D, H, W)``: float32 for images (header
    scaling applied), int16 with ``C == 1`` for label maps (``is_label=True``; values must be
    whole numbers within int16). The affine is nibabel's best affine (sform, else qform).
    Raises :class:`CohortError` naming the file when it is missing, not NIfTI, truncated,
    not 3D, or (for labels) holds non-integer, non-finite or out-of-range values.
    """
    path = Path(path)
    img = _load(path)
    try:
        if is_label:
            arr = np.asanyarray(img.dataobj)
        else:
            arr = img.get_fdata(dtype=np.float32)
    except Exception as e:  # EOFError, zlib.error, OSError, ValueError ... for cut-short data
        raise CohortError(f"truncated or corrupt voxel data ({_reason(e)})", path) from e
    affine = np.asarray(img.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise CohortError("affine holds NaN/Inf", path)
    data = _channels_first(np.asarray(arr), path)
    if is_label:
        if data.shape[0] != 1:
            raise CohortError(
                f"label map has {data.shape[0]} volumes (shape {tuple(arr.shape)}); expected 3D",
                path,
            )
        data = to_label_array(data, path)
    else:
        data = np.ascontiguousarray(data, dtype=np.float32)
    return Volume(data=data, affine=affine)


def to_label_array(data: np.ndarray, path: str | Path | None = None) -> np.ndarray:
    """Cast a label array to int16, refusing NaN/Inf, fractions and values outside int16."""
    if data.dtype.kind in "iub":
        if data.size and not np.can_cast(data.dtype, np.int16):
            lo, hi = int(data.min()), int(data.max())
            if lo < _INT16.min or hi > _INT16.max:
                raise CohortError(f"label values {lo}..{hi} do not fit int16", path)
        return np.ascontiguousarray(data, dtype=np.int16)
    if data.dtype.kind != "f":
        raise CohortError(f"label map has unsupported data type {data.dtype}", path)
    if not np.all(np.isfinite(data)):
        raise CohortError(f"label map has {int(np.sum(~np.isfinite(data)))} NaN/Inf voxels", path)
    rounded = np.rint(data)
    if np.any(np.abs(data - rounded) > 1e-3):
        raise CohortError("label map has non-integer values", path)
    if data.size and (rounded.min() < _INT16.min or rounded.max() > _INT16.max):
        raise CohortError("label values do not fit int16", path)
    return np.ascontiguousarray(rounded, dtype=np.int16)


def nifti_header_shape(path: str | Path) -> tuple[int, ...]:
    """The stored array shape from the header only (no voxel data read)."""
    return tuple(int(s) for s in _load(Path(path)).shape)


def write_nifti(
    path: str | Path,
    data: np.ndarray,
    affine: np.ndarray,
    *,
    is_label: bool = False,
) -> Path:
    """Write ``data`` as a NIfTI-1 file with a fresh, clean header, atomically.

    ``data`` is ``(C, D, H, W)`` or ``(D, H, W)``; ``C == 1`` is written 3D, ``C > 1`` as 4D
    ``(D, H, W, C)``. Images are stored float32; label maps (``is_label=True``) uint8 when all
    values lie in 0..255, else int16. ``affine`` ``(4, 4)`` voxel -> RAS mm is stored as both
    sform and qform (code 1). The suffix of ``path`` (``.nii`` or ``.nii.gz``) picks
    compression. Returns ``path``.
    """
    import nibabel as nib

    path = Path(path)
    suffix = nifti_suffix(path.name)
    if not suffix:
        raise UsageError("output name must end in .nii or .nii.gz", path)
    arr = np.asarray(data)
    if hasattr(data, "detach"):  # a torch tensor
        arr = data.detach().cpu().numpy()  # type: ignore[union-attr]
    if arr.ndim == 4:
        arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    elif arr.ndim != 3:
        raise ValueError(f"write_nifti expects (C, D, H, W) or (D, H, W), got {arr.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError("write_nifti needs a finite (4, 4) affine")

    if is_label:
        lab = to_label_array(arr, path)
        lo, hi = (int(lab.min()), int(lab.max())) if lab.size else (0, 0)
        arr = lab.astype(np.uint8) if lo >= 0 and hi <= 255 else lab
    else:
        arr = np.asarray(arr, dtype=np.float32)
    arr = np.ascontiguousarray(arr)

    header = nib.Nifti1Header()
    header.set_data_dtype(arr.dtype)
    img = nib.Nifti1Image(arr, affine, header=header)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    hdr = img.header
    hdr.set_xyzt_units("mm", "sec")
    for field in ("descrip", "aux_file", "intent_name", "db_name"):
        hdr[field] = b""
    hdr["scl_slope"], hdr["scl_inter"] = np.nan, np.nan  # no scaling
    hdr.extensions.clear()

    raw = img.to_bytes()
    if suffix.lower() == ".nii.gz":
        raw = gzip.compress(raw, compresslevel=1, mtime=0)
    return write_bytes(path, raw)
