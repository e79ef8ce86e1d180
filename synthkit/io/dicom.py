"""Reading one DICOM series (a folder of single-frame slices) into a RAS :class:`Volume`.

Voxel axes. pydicom's ``pixel_array`` of a slice is ``(rows, columns)``. DICOM's
ImageOrientationPatient (IOP) holds two unit vectors in patient LPS space: ``IOP[:3]`` is the
direction in which the *column index* grows (along a row), ``IOP[3:]`` the direction in which
the *row index* grows (down a column). PixelSpacing is ``(row spacing, column spacing)``, so
the column index steps ``PixelSpacing[1]`` mm and the row index ``PixelSpacing[0]`` mm.
synthkit orders the voxel axes as

    i = column index,  j = row index,  k = slice index

so the volume is ``data[0, i, j, k] = slice_k.pixel_array[j, i]`` and the LPS affine is

    [ IOP[:3] * PixelSpacing[1] | IOP[3:] * PixelSpacing[0] | slice step | IPP of slice 0 ]

which makes the first two affine columns the DICOM in-plane vectors, as in NIfTI files made by
dcm2niix-like tools. Slices are ordered by their position along the slice normal
``n = IOP[:3] x IOP[3:]`` (never by file name or InstanceNumber); the slice step is the mean
difference of consecutive ImagePositionPatient vectors (this also keeps a gantry tilt as a
shear). The world frame is then converted from DICOM LPS+ to NIfTI RAS+ by negating x and y:
``affine_ras = diag(-1, -1, 1, 1) @ affine_lps``. Intensities are ``stored * RescaleSlope +
RescaleIntercept`` per slice, float32.

A folder with several series, mixed orientations or sizes, duplicate positions, or irregular
slice gaps raises :class:`~synthkit.errors.CohortError` naming the folder or file.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.errors import CohortError
from synthkit.io.volume import Volume

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Consecutive slice gaps may differ from their median by this fraction (plus 1e-3 mm).
SPACING_RTOL = 0.01
_ORIENT_ATOL = 1e-4


def dicom_affine(
    orientation: Sequence[float],
    first_position: Sequence[float],
    pixel_spacing: Sequence[float],
    slice_step: Sequence[float],
) -> np.ndarray:
    """The ``(4, 4)`` voxel ``(i=column, j=row, k=slice)`` -> RAS mm affine of a series.

    ``orientation`` is ImageOrientationPatient (6 values, LPS), ``first_position`` the
    ImagePositionPatient of slice ``k = 0``, ``pixel_spacing`` DICOM PixelSpacing
    ``(row spacing, column spacing)``, ``slice_step`` the LPS vector from slice ``k`` to
    ``k + 1`` in mm.
    """
    iop = np.asarray(orientation, dtype=np.float64)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * float(pixel_spacing[1])
    lps[:3, 1] = iop[3:] * float(pixel_spacing[0])
    lps[:3, 2] = np.asarray(slice_step, dtype=np.float64)
    lps[:3, 3] = np.asarray(first_position, dtype=np.float64)
    return LPS_TO_RAS @ lps


def _dcmread(path: Path, *, pixels: bool) -> Any | None:
    """A pydicom dataset, or ``None`` when the file is not DICOM at all."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=not pixels)
    except InvalidDicomError:
        return None
    except Exception as e:
        raise CohortError(f"unreadable or truncated DICOM file ({type(e).__name__}: {e})", path) from e


def _series_files(folder: Path) -> list[Path]:
    if not folder.exists():
        raise CohortError("DICOM folder not found", folder)
    if not folder.is_dir():
        raise CohortError("not a folder (expected one DICOM series)", folder)
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"
    )


def _floats(ds: Any, keyword: str, n: int, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None:
        raise CohortError(f"missing {keyword}", path)
    try:
        arr = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise CohortError(f"bad {keyword} value {value!r}", path) from e
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise CohortError(f"bad {keyword} value {value!r}", path)
    return arr


def load_series_datasets(folder: str | Path) -> list[tuple[Path, Any]]:
    """All image datasets (with pixels) of the one series in ``folder``, unsorted.

    Non-DICOM files, DICOMDIR and datasets without PixelData are skipped. Raises
    :class:`CohortError` when nothing is left or the folder holds several series.
    """
    folder = Path(folder)
    items: list[tuple[Path, Any]] = []
    for p in _series_files(folder):
        ds = _dcmread(p, pixels=True)
        if ds is None:
            continue
        if "PixelData" not in ds:
            if _is_image_sop(ds):  # pydicom reads a cut-short file silently up to the cut
                raise CohortError("truncated or incomplete DICOM image file (no pixel data)", p)
            continue  # structured report, presentation state, ...
        items.append((p, ds))
    if not items:
        raise CohortError("no DICOM image files", folder)
    uids = {str(ds.get("SeriesInstanceUID", "")) for _, ds in items}
    if len(uids) > 1:
        raise CohortError(f"holds {len(uids)} DICOM series; expected exactly one", folder)
    return items


def _is_image_sop(ds: Any) -> bool:
    """True when the SOP class is an image storage class, or unknown (file cut short)."""
    from pydicom.uid import UID

    sop = ds.get("SOPClassUID") or ds.get("file_meta", {}).get("MediaStorageSOPClassUID")
    if not sop:
        return True
    return "Image" in UID(str(sop)).name


def _slice_pixels(ds: Any, path: Path) -> np.ndarray:
    """``(rows, columns)`` float32 with the modality rescale applied."""
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise CohortError("multi-frame DICOM is not supported", path)
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise CohortError("colour DICOM is not supported (SamplesPerPixel != 1)", path)
    try:
        px = ds.pixel_array
    except Exception as e:
        raise CohortError(f"cannot decode pixel data ({type(e).__name__}: {e})", path) from e
    if px.ndim != 2:
        raise CohortError(f"pixel data has shape {px.shape}; expected (rows, columns)", path)
    slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
    intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
    return px.astype(np.float32) * np.float32(slope) + np.float32(intercept)


def read_dicom_series(folder: str | Path, *, spacing_rtol: float = SPACING_RTOL) -> Volume:
    """Read the single DICOM series in ``folder`` as a ``(1, cols, rows, slices)`` float32
    :class:`Volume` with a voxel -> RAS affine (see the module docstring for the axes).

    Raises :class:`CohortError` for unreadable files, several series, mixed orientation or
    image size, duplicate slice positions, or slice gaps that differ by more than
    ``spacing_rtol`` of their median (irregular spacing cannot be one affine).
    """
    folder = Path(folder)
    items = load_series_datasets(folder)

    p0, ds0 = items[0]
    iop = _floats(ds0, "ImageOrientationPatient", 6, p0)
    spacing = _floats(ds0, "PixelSpacing", 2, p0)
    rows, cols = int(ds0.Rows), int(ds0.Columns)
    row_dir, col_dir = iop[:3], iop[3:]
    if abs(np.linalg.norm(row_dir) - 1) > 1e-3 or abs(np.linalg.norm(col_dir) - 1) > 1e-3 \
            or abs(float(row_dir @ col_dir)) > 1e-3:
        raise CohortError(f"ImageOrientationPatient {iop.tolist()} is not two orthonormal vectors", p0)
    normal = np.cross(row_dir, col_dir)

    positions = []
    for p, ds in items:
        if np.max(np.abs(_floats(ds, "ImageOrientationPatient", 6, p) - iop)) > _ORIENT_ATOL:
            raise CohortError("slices with different orientations (mixed series)", folder)
        if (int(ds.Rows), int(ds.Columns)) != (rows, cols):
            raise CohortError("slices with different image sizes (mixed series)", folder)
        if np.max(np.abs(_floats(ds, "PixelSpacing", 2, p) - spacing)) > 1e-4:
            raise CohortError("slices with different pixel spacing (mixed series)", folder)
        positions.append(_floats(ds, "ImagePositionPatient", 3, p))
    pos = np.stack(positions)
    dist = pos @ normal
    order = np.argsort(dist, kind="stable")
    pos, dist = pos[order], dist[order]
    items = [items[i] for i in order]

    n = len(items)
    if n > 1:
        gaps = np.diff(dist)
        if np.min(gaps) < 1e-3:
            raise CohortError(
                "duplicate slice positions (several volumes, echoes or time points in one series)",
                folder,
            )
        median = float(np.median(gaps))
        if float(np.max(np.abs(gaps - median))) > spacing_rtol * median + 1e-3:
            raise CohortError(
                f"irregular slice spacing: gaps from {float(gaps.min()):.4g} to "
                f"{float(gaps.max()):.4g} mm",
                folder,
            )
        step = (pos[-1] - pos[0]) / (n - 1)
        off_line = np.abs(pos - (pos[0] + np.arange(n)[:, None] * step)).max()
        if off_line > spacing_rtol * median + 1e-3:
            raise CohortError("slice positions do not lie on a line (mixed series)", folder)
    else:
        thick = ds0.get("SpacingBetweenSlices") or ds0.get("SliceThickness") or 1.0
        step = normal * float(thick)

    data = np.empty((cols, rows, n), dtype=np.float32)
    for k, (p, ds) in enumerate(items):
        data[:, :, k] = _slice_pixels(ds, p).T
    affine = dicom_affine(iop, pos[0], spacing, step)
    return Volume(data=data[None], affine=affine)


def peek_modality(folder: str | Path) -> str | None:
    """The Modality (e.g. ``"CT"``, ``"MR"``) of the first DICOM file in ``folder``, or None."""
    try:
        files = _series_files(Path(folder))
    except CohortError:
        return None
    for p in files:
        try:
            ds = _dcmread(p, pixels=False)
        except CohortError:
            continue
        if ds is not None:
            mod = str(ds.get("Modality", "") or "").strip()
            return mod or None
    return None
