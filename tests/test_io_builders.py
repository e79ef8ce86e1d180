"""Builders for tiny cohorts of every layout (imported by the other test_io_* / test_cli_cohort
modules), plus tests that the builders themselves write what they claim."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from synthkit.io.nifti import write_nifti
from synthkit.io.nnunet import write_nnunet_dataset_json

S = 16  # edge of the test volumes
AFFINE = np.array(
    [[1.5, 0.0, 0.0, -12.0], [0.0, 1.25, 0.0, 7.0], [0.0, 0.0, 2.0, 3.0], [0.0, 0.0, 0.0, 1.0]]
)


def image_array(value: float = 1.0, shape: tuple[int, ...] = (S, S, S)) -> np.ndarray:
    """A smooth image whose mean identifies it: ``value`` + a small ramp with mean 0."""
    ramp = np.linspace(-1, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape)
    return (value + 0.1 * ramp).astype(np.float32)


def mask_array(label: int = 1, shape: tuple[int, ...] = (S, S, S)) -> np.ndarray:
    m = np.zeros(shape, dtype=np.int16)
    m[4:10, 5:11, 3:9] = label
    return m


def make_flat(root: Path, ids: Sequence[str], *, channels: int = 1, skip_mask: Sequence[str] = ()) -> Path:
    """``images/{id}.nii.gz`` (3D, or 4D with ``channels``) and ``masks/{id}.nii.gz``; the image
    of the k-th id has mean ``k`` (channel c: ``k + 10 c``) and its mask holds label ``k + 1``."""
    for k, cid in enumerate(ids):
        img = np.stack([image_array(k + 10 * c) for c in range(channels)])
        write_nifti(root / "images" / f"{cid}.nii.gz", img, AFFINE)
        if cid not in skip_mask:
            write_nifti(root / "masks" / f"{cid}.nii.gz", mask_array(k + 1), AFFINE, is_label=True)
    return root


def make_nnunet(
    root: Path,
    ids: Sequence[str],
    *,
    channels: Sequence[str] = ("T1", "T2"),
    labels: dict[str, int] | None = None,
    test_ids: Sequence[str] = (),
) -> Path:
    """nnU-Net v2 raw: ``imagesTr/{id}_{c:04d}.nii.gz`` (mean ``k + 10 c``), ``labelsTr/{id}``
    (label 1), ``imagesTs/`` for ``test_ids`` and ``dataset.json``."""
    labels = labels or {"background": 0, "tumour": 1}
    for k, cid in enumerate(ids):
        for c in range(len(channels)):
            write_nifti(root / "imagesTr" / f"{cid}_{c:04d}.nii.gz", image_array(k + 10 * c), AFFINE)
        write_nifti(root / "labelsTr" / f"{cid}.nii.gz", mask_array(1), AFFINE, is_label=True)
    for k, cid in enumerate(test_ids):
        for c in range(len(channels)):
            write_nifti(root / "imagesTs" / f"{cid}_{c:04d}.nii.gz", image_array(k + 10 * c), AFFINE)
    write_nnunet_dataset_json(root, tuple(channels), labels, len(ids))
    return root


BRATS_CLASSIC = ("t1", "t1ce", "t2", "flair")
BRATS_2023 = ("t1n", "t1c", "t2w", "t2f")


def make_brats(root: Path, ids: Sequence[str], *, names: Sequence[str] = BRATS_CLASSIC, sep: str = "_",
               seg_labels: Sequence[int] = (1, 2, 4)) -> Path:
    """``{id}/{id}{sep}{name}.nii.gz`` per modality, written in a shuffled order; modality m
    (in T1, T1ce, T2, FLAIR order) has mean ``100 m``; ``seg`` holds ``seg_labels``."""
    rng = np.random.default_rng(0)
    for cid in ids:
        order = rng.permutation(len(names))
        for m in order:
            write_nifti(root / cid / f"{cid}{sep}{names[m]}.nii.gz", image_array(100.0 * m), AFFINE)
        seg = np.zeros((S, S, S), dtype=np.int16)
        for i, lab in enumerate(seg_labels):
            seg[3 + 3 * i : 6 + 3 * i, 4:12, 4:12] = lab
        write_nifti(root / cid / f"{cid}{sep}seg.nii.gz", seg, AFFINE, is_label=True)
    return root


def write_dicom_series(
    folder: Path,
    pixels: np.ndarray,
    *,
    orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
    positions: Sequence[Sequence[float]],
    pixel_spacing: Sequence[float] = (0.5, 0.7),
    thickness: float = 2.0,
    slope: float = 1.0,
    intercept: float = 0.0,
    modality: str = "MR",
    series_uid: str | None = None,
    file_order: Sequence[int] | None = None,
    instance_numbers: Sequence[int] | None = None,
) -> list[Path]:
    """Write ``pixels[k]`` (``(slices, rows, cols)`` int16) as one DICOM file per slice.

    Slice ``k`` gets ImagePositionPatient ``positions[k]``. Files are named ``IM{n}`` where
    ``n`` runs through ``file_order`` (default: reversed), so names say nothing of position;
    InstanceNumbers default to a shuffled order too.
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    n = pixels.shape[0]
    file_order = list(file_order) if file_order is not None else list(range(n))[::-1]
    instance_numbers = list(instance_numbers) if instance_numbers is not None else \
        [int(x) + 1 for x in np.random.default_rng(1).permutation(n)]
    sop = CTImageStorage if modality == "CT" else MRImageStorage
    series_uid = series_uid or generate_uid()
    study_uid = generate_uid()

    def ds_fmt(v: float) -> str:  # DS values are at most 16 characters
        return f"{float(v):.10g}"

    paths = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"IM{file_order[k]:04d}"
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID = sop
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.Modality = modality
        ds.InstanceNumber = instance_numbers[k]
        ds.ImagePositionPatient = [ds_fmt(v) for v in positions[k]]
        ds.ImageOrientationPatient = [ds_fmt(v) for v in orientation]
        ds.PixelSpacing = [ds_fmt(v) for v in pixel_spacing]
        ds.SliceThickness = ds_fmt(thickness)
        ds.Rows, ds.Columns = int(pixels.shape[1]), int(pixels.shape[2])
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = ds_fmt(slope)
        ds.RescaleIntercept = ds_fmt(intercept)
        ds.PixelData = np.ascontiguousarray(pixels[k], dtype="<i2").tobytes()
        ds.save_as(str(path), enforce_file_format=True)
        paths.append(path)
    return paths


def axial_positions(n: int, first=(-100.0, -120.0, -50.0), step: float = 2.0) -> list[tuple[float, ...]]:
    return [(first[0], first[1], first[2] + step * k) for k in range(n)]


def dicom_pixels(n: int = 4, rows: int = 6, cols: int = 5) -> np.ndarray:
    """``(n, rows, cols)`` int16 with ``value = 100 k + 10 r + c`` (each voxel says where it is)."""
    k, r, c = np.meshgrid(np.arange(n), np.arange(rows), np.arange(cols), indexing="ij")
    return (100 * k + 10 * r + c).astype(np.int16)


def make_dicom_cohort(root: Path, ids: Sequence[str], *, n: int = 4, rows: int = 6, cols: int = 5) -> Path:
    """``images/{id}/`` axial series + ``masks/{id}.nii.gz`` on the same world grid."""
    from synthkit.io.dicom import dicom_affine

    for cid in ids:
        write_dicom_series(root / "images" / cid, dicom_pixels(n, rows, cols), positions=axial_positions(n))
        aff = dicom_affine((1, 0, 0, 0, 1, 0), (-100, -120, -50), (0.5, 0.7), (0, 0, 2))
        m = np.zeros((cols, rows, n), dtype=np.int16)
        m[1:3, 2:4, 1:3] = 1
        write_nifti(root / "masks" / f"{cid}.nii.gz", m, aff, is_label=True)
    return root


# ----------------------------------------------------------------------------- builder tests


def test_dicom_builder_writes_readable_part10_files(tmp_path):
    import pydicom

    paths = write_dicom_series(tmp_path / "s", dicom_pixels(3), positions=axial_positions(3))
    ds = pydicom.dcmread(paths[0])
    assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert ds.pixel_array.shape == (6, 5)
    assert [float(v) for v in ds.PixelSpacing] == [0.5, 0.7]
    # file IM0000 is the last slice: names do not follow position
    assert int(pydicom.dcmread(tmp_path / "s" / "IM0000").pixel_array[0, 0]) == 200


def test_flat_builder_images_identify_their_case(tmp_path):
    make_flat(tmp_path, ["a", "b"], channels=2)
    img = nib.load(tmp_path / "images" / "b.nii.gz")
    assert img.shape == (S, S, S, 2)
    data = img.get_fdata()
    assert abs(data[..., 0].mean() - 1) < 1e-4 and abs(data[..., 1].mean() - 11) < 1e-4
