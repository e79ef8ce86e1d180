"""NIfTI reading and the clean, atomic, deterministic writer."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest
from test_io_builders import AFFINE, image_array, mask_array

from synthkit.errors import CohortError, UsageError
from synthkit.io.nifti import read_nifti, write_nifti


def test_multichannel_roundtrip_keeps_channels_and_affine(tmp_path):
    data = np.stack([image_array(0.0), image_array(5.0)])  # (2, 16, 16, 16)
    p = write_nifti(tmp_path / "x.nii.gz", data, AFFINE)
    assert nib.load(p).shape == (16, 16, 16, 2)
    vol = read_nifti(p)
    assert vol.data.shape == (2, 16, 16, 16) and vol.data.dtype == np.float32
    np.testing.assert_array_equal(vol.data, data)
    np.testing.assert_allclose(vol.affine, AFFINE)
    assert vol.spacing == pytest.approx((1.5, 1.25, 2.0))


def test_label_dtype_and_read_back_int16(tmp_path):
    small = write_nifti(tmp_path / "a.nii.gz", mask_array(3), AFFINE, is_label=True)
    big = write_nifti(tmp_path / "b.nii", mask_array(300), AFFINE, is_label=True)
    neg = write_nifti(tmp_path / "c.nii.gz", mask_array(-1), AFFINE, is_label=True)
    assert nib.load(small).get_data_dtype() == np.uint8
    assert nib.load(big).get_data_dtype() == np.int16
    assert nib.load(neg).get_data_dtype() == np.int16
    vol = read_nifti(big, is_label=True)
    assert vol.data.shape == (1, 16, 16, 16) and vol.data.dtype == np.int16
    assert set(np.unique(vol.data)) == {0, 300}


def test_float_labels_are_read_as_integers_or_refused(tmp_path):
    p = tmp_path / "f.nii.gz"
    nib.save(nib.Nifti1Image(mask_array(2).astype(np.float32), AFFINE), p)
    assert set(np.unique(read_nifti(p, is_label=True).data)) == {0, 2}
    nib.save(nib.Nifti1Image(mask_array(2).astype(np.float32) * 0.3, AFFINE), p)
    with pytest.raises(CohortError, match="non-integer"):
        read_nifti(p, is_label=True)


def test_written_header_is_clean_even_from_a_dirty_source(tmp_path):
    src = nib.Nifti1Image(image_array(1.0), AFFINE)
    src.header["descrip"] = b"Patient Jane Doe 1970"
    src.header["aux_file"] = b"MRN12345"
    src.header["intent_name"] = b"secret"
    src.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"patient comment"))
    nib.save(src, tmp_path / "src.nii.gz")
    vol = read_nifti(tmp_path / "src.nii.gz")
    out = write_nifti(tmp_path / "clean.nii.gz", vol.data, vol.affine)
    img = nib.load(out)
    h = img.header
    for field in ("descrip", "aux_file", "intent_name", "db_name"):
        assert bytes(h[field].item()) == b""
    assert len(h.extensions) == 0
    assert int(h["sform_code"]) == 1 and int(h["qform_code"]) == 1
    np.testing.assert_allclose(img.get_qform(), AFFINE, atol=1e-5)
    np.testing.assert_allclose(img.get_sform(), AFFINE, atol=1e-6)
    raw = gzip.decompress(out.read_bytes())
    assert b"Jane" not in raw and b"MRN" not in raw


def test_writes_are_deterministic_and_do_not_embed_the_file_name(tmp_path):
    a = write_nifti(tmp_path / "patient_0001.nii.gz", image_array(2.0), AFFINE)
    b = write_nifti(tmp_path / "other.nii.gz", image_array(2.0), AFFINE)
    assert a.read_bytes() == b.read_bytes()
    assert b"patient_0001" not in a.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.nii.gz", "patient_0001.nii.gz"]


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(CohortError):
        write_nifti(tmp_path / "m.nii.gz", mask_array(1) + 0.5, AFFINE, is_label=True)
    with pytest.raises(UsageError):
        write_nifti(tmp_path / "m.png", mask_array(1), AFFINE)
    assert list(tmp_path.iterdir()) == []


def test_truncated_missing_and_garbage_files_raise_cohort_error_naming_them(tmp_path):
    p = write_nifti(tmp_path / "t.nii.gz", image_array(1.0), AFFINE)
    raw = p.read_bytes()
    p.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CohortError, match="truncated") as err:
        read_nifti(p)
    assert "t.nii.gz" in str(err.value)

    u = write_nifti(tmp_path / "u.nii", image_array(1.0), AFFINE)
    u.write_bytes(u.read_bytes()[:1000])
    with pytest.raises(CohortError, match="u.nii"):
        read_nifti(u)

    (tmp_path / "junk.nii.gz").write_bytes(b"this is not a nifti file")
    with pytest.raises(CohortError, match="junk.nii.gz"):
        read_nifti(tmp_path / "junk.nii.gz")
    with pytest.raises(CohortError, match="file not found"):
        read_nifti(tmp_path / "absent.nii.gz")


def test_2d_file_and_4d_label_are_refused(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((8, 8), np.float32), np.eye(4)), tmp_path / "flat.nii.gz")
    with pytest.raises(CohortError, match="not a 3D volume"):
        read_nifti(tmp_path / "flat.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 8, 2), np.int16), np.eye(4)), tmp_path / "l4.nii.gz")
    with pytest.raises(CohortError, match="2 volumes"):
        read_nifti(tmp_path / "l4.nii.gz", is_label=True)


def test_5d_vector_file_gives_channels(tmp_path):
    data = np.zeros((4, 5, 6, 1, 3), np.float32)
    data[..., 0, 2] = 7
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "v.nii.gz")
    vol = read_nifti(tmp_path / "v.nii.gz")
    assert vol.data.shape == (3, 4, 5, 6)
    assert vol.data[2].min() == 7 and vol.data[:2].max() == 0
