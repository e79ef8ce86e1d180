"""De-identification: opaque ids, mapping placement, clean NIfTI, DICOM export, scanning."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from synthkit.errors import UsageError
from synthkit.privacy.deid import dicom_export, identifiers, outputs


def test_fresh_ids_are_opaque_distinct_and_seeded():
    ids = outputs.fresh_case_ids(50, np.random.default_rng(3))
    assert len(set(ids)) == 50
    assert all(i.startswith("syn_") and len(i) == 16 and int(i[4:], 16) >= 0 for i in ids)
    assert ids == outputs.fresh_case_ids(50, np.random.default_rng(3))
    assert ids != outputs.fresh_case_ids(50, np.random.default_rng(4))


def test_mapping_must_live_outside_the_output(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for bad in (out / "map.json", out / "sub" / "map.json", out):
        with pytest.raises(UsageError, match="outside"):
            outputs.check_mapping_path(bad, out)
    with pytest.raises(UsageError, match="outside"):  # a relative path that resolves inside
        outputs.check_mapping_path(out / ".." / "out" / "m.json", out)
    p = outputs.write_mapping(tmp_path / "map.json", out, {"patient-7": "syn_abc"})
    assert "patient-7" in p.read_text() and not any(out.iterdir())


def _dirty_nifti(path, name="DOE^JOHN"):
    img = nib.Nifti1Image(np.ones((4, 4, 4), np.float32), np.eye(4))
    img.header["descrip"] = name.encode()
    img.header["aux_file"] = b"MRN12345"
    img.header.extensions.append(nib.nifti1.Nifti1Extension(6, name.encode()))  # comment extension
    raw = img.to_bytes()
    with open(path, "wb") as f, gzip.GzipFile(filename=name, mode="wb", fileobj=f, mtime=1234567) as gz:
        gz.write(raw)
    return path


def test_header_problems_found_and_rewrite_is_clean(tmp_path):
    dirty = _dirty_nifti(tmp_path / "dirty.nii.gz")
    problems = outputs.nifti_header_problems(dirty)
    joined = " ".join(problems)
    for what in ("descrip", "aux_file", "extension", "file name", "time stamp"):
        assert what in joined
    img = nib.load(str(dirty))
    out = outputs.write_deidentified_nifti(tmp_path / "clean" / "x.nii.gz", np.asarray(img.dataobj), img.affine)
    assert outputs.nifti_header_problems(out) == []
    assert identifiers.scan_for_identifiers(tmp_path / "clean", ["DOE^JOHN", "MRN12345"]) == []
    lab = outputs.write_deidentified_nifti(tmp_path / "clean" / "m.nii.gz", np.ones((1, 4, 4, 4)), np.eye(4), is_label=True)
    assert nib.load(str(lab)).get_data_dtype().kind in "iu"


def test_scan_finds_paths_bytes_and_gzip_contents(tmp_path):
    (tmp_path / "case_MRN12345").mkdir()
    (tmp_path / "case_MRN12345" / "a.txt").write_text("nothing")
    (tmp_path / "b.bin").write_bytes(b"\x00xx doe^john yy")
    (tmp_path / "c.gz").write_bytes(gzip.compress(b"hello Smith", mtime=0))
    (tmp_path / "d.txt").write_bytes("Smith".encode("utf-16-le"))
    hits = identifiers.scan_for_identifiers(tmp_path, ["MRN12345", "DOE^JOHN", "smith"])
    got = {(h.path.name, h.where, h.needle) for h in hits}
    assert ("case_MRN12345", "path", "MRN12345") in got
    assert ("a.txt", "path", "MRN12345") in got
    assert ("b.bin", "content", "DOE^JOHN") in got
    assert ("c.gz", "content", "smith") in got
    assert ("d.txt", "content", "smith") in got
    assert identifiers.scan_for_identifiers(tmp_path, ["absent-name"]) == []


@pytest.mark.parametrize("oblique", [False, True])
def test_dicom_series_round_trips_geometry_and_is_deidentified(tmp_path, oblique):
    import pydicom

    from synthkit.io import read_dicom_series

    rng = np.random.default_rng(0)
    vol = rng.normal(100.0, 30.0, size=(6, 5, 4)).astype(np.float32)  # (i, j, k)
    aff = np.diag([0.9, 1.1, 2.5, 1.0])
    if oblique:
        c, s = np.cos(0.3), np.sin(0.3)
        rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
        aff[:3, :3] = rot @ aff[:3, :3]
    aff[:3, 3] = [-10.0, 20.0, 5.0]
    files = dicom_export.write_dicom_series(tmp_path / "s", vol, aff, rng=np.random.default_rng(1), series_description="T1")
    assert len(files) == 4
    back = read_dicom_series(tmp_path / "s")
    np.testing.assert_allclose(back.affine, aff, atol=1e-4)
    ds = pydicom.dcmread(files[0])
    assert "RescaleSlope" not in ds and "RescaleIntercept" not in ds  # no Modality LUT on MR
    m = dicom_export.value_mapping(vol)
    rw = ds.RealWorldValueMappingSequence[0]
    assert (float(rw.RealWorldValueSlope), float(rw.RealWorldValueIntercept)) == (m.slope, m.intercept)
    np.testing.assert_allclose(back.data[0] * m.slope + m.intercept, vol, atol=m.slope)
    assert ds.PatientIdentityRemoved == "YES"
    code = ds.DeidentificationMethodCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("113100", "DCM")
    assert code.CodeMeaning == "Basic Application Confidentiality Profile"
    assert ds.PatientName == "" and ds.PatientID == "" and ds.PatientBirthDate == ""
    for elem in ds.iterall():
        if elem.VR in ("DA", "DT", "TM"):
            assert not elem.value, elem.keyword
        assert elem.keyword not in ("InstitutionName", "StationName", "DeviceSerialNumber",
                                    "OperatorsName", "InstitutionAddress")
    uids = {pydicom.dcmread(f).SOPInstanceUID for f in files}
    assert len(uids) == 4
    assert len({pydicom.dcmread(f).SeriesInstanceUID for f in files}) == 1


def test_integer_volumes_are_stored_unchanged(tmp_path):
    import pydicom

    vol = np.arange(60, dtype=np.float32).reshape(5, 4, 3) * 7
    assert dicom_export.value_mapping(vol).identity and not dicom_export.value_mapping(vol).signed
    assert dicom_export.value_mapping(vol - 100).identity and dicom_export.value_mapping(vol - 100).signed
    assert not dicom_export.value_mapping(vol + 0.5).identity
    files = dicom_export.write_dicom_series(tmp_path / "s", vol - 100, np.eye(4), rng=np.random.default_rng(0))
    ds = pydicom.dcmread(files[1])
    assert ds.PixelRepresentation == 1
    np.testing.assert_array_equal(ds.pixel_array, (vol - 100)[:, :, 1].T)


def _dciodvfy_errors(path):
    import shutil
    import subprocess

    exe = shutil.which("dciodvfy")
    if exe is None:
        pytest.skip("dciodvfy (Debian/Ubuntu package dicom3tools) is not on PATH: DICOM conformance not checked")
    res = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60, check=False)
    lines = (res.stdout + res.stderr).splitlines()
    return [ln for ln in lines if "Error" in ln], lines


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_exported_series_passes_dciodvfy_without_errors(tmp_path, modality):
    rng = np.random.default_rng(2)
    vol = rng.normal(300.0, 80.0, size=(12, 10, 3)).astype(np.float32)  # not integers: scaled
    aff = np.diag([0.9, 1.1, 2.5, 1.0])
    aff[:3, 3] = [-5.0, 7.0, 3.0]
    files = dicom_export.write_dicom_series(tmp_path / "s", vol, aff, rng=rng, series_description="synthetic T1",
                                    modality=modality, patient_id="syn_0123456789ab")
    for f in files:
        errors, lines = _dciodvfy_errors(f)
        assert errors == [], "\n".join(lines)
        assert any(ln.strip() == f"{modality}Image" for ln in lines)  # the IOD it was checked against


def test_dicom_is_reproducible_per_seed_and_refuses_bad_input(tmp_path):
    vol = np.arange(27, dtype=np.float32).reshape(3, 3, 3)
    a = dicom_export.write_dicom_series(tmp_path / "a", vol, np.eye(4), rng=np.random.default_rng(5))
    b = dicom_export.write_dicom_series(tmp_path / "b", vol, np.eye(4), rng=np.random.default_rng(5))
    c = dicom_export.write_dicom_series(tmp_path / "c", vol, np.eye(4), rng=np.random.default_rng(6))
    assert a[0].read_bytes() == b[0].read_bytes() != c[0].read_bytes()
    sheared = np.eye(4)
    sheared[0, 1] = 0.5
    with pytest.raises(ValueError, match="orthogonal"):
        dicom_export.write_dicom_series(tmp_path / "d", vol, sheared, rng=np.random.default_rng(0))
    with pytest.raises(ValueError):
        dicom_export.write_dicom_series(tmp_path / "e", np.zeros((2, 3, 3, 3)), np.eye(4), rng=np.random.default_rng(0))


# --------------------------------------------------------------------------- the complete scan
SHORT_PID = "4821"  # a 4-character PatientID: searched as a token, never as bytes


def _identifying_dicom_cohort(root):
    """Two DICOM series; PatientID is 4 characters; one value only in the LAST file of a series."""
    import pydicom
    from phantoms import phantom

    from synthkit.io import discover_cohort, write_nnunet_dataset_json

    for n, cid in enumerate(["subjA", "subjB"]):
        img, msk = phantom(12, seed=n)
        files = dicom_export.write_dicom_series(root / "images" / cid, img.data[0] * 1000, img.affine,
                                        rng=np.random.default_rng(n))
        for k, f in enumerate(files):
            ds = pydicom.dcmread(f)
            ds.PatientName, ds.PatientID, ds.PatientBirthDate = "ROE^JANE", SHORT_PID, "19700102"
            if k == len(files) - 1:
                ds.OperatorsName = "KILDARE^JAMES"  # PN only in the last slice
                ds.StationName = "MRSCAN7"  # SH only in the last slice
            ds.save_as(f)
        m = nib.Nifti1Image(msk.data[0].astype(np.uint8), img.affine)
        m.header["descrip"] = b"ward 12 bed 9"
        (root / "masks").mkdir(parents=True, exist_ok=True)
        nib.save(m, str(root / "masks" / f"{cid}.nii.gz"))
    write_nnunet_dataset_json(root, ("MR",), {"background": 0, "head": 1, "tumour": 2}, 2)
    return discover_cohort(root)


def test_needles_come_from_every_file_and_every_text_vr(tmp_path):
    needles = identifiers.identifier_needles(_identifying_dicom_cohort(tmp_path / "in"))
    low = {n.lower() for n in needles}
    for want in (SHORT_PID, "ROE^JANE", "ROE", "JANE", "19700102", "KILDARE", "JAMES", "MRSCAN7",
                 "subjA", "subjB", "ward 12 bed 9"):
        assert want.lower() in low, want
    assert not {"images", "masks", "imagestr", "dcm", "mr"} & low  # layout words, coded concepts, short values
    assert not any(n.startswith("1.2.840.10008.") for n in needles)  # standard UIDs (same in every file)
    assert any(n.startswith("1.2.") and len(n) > 20 for n in needles)  # instance UIDs are needles
    assert "ROE" not in identifiers.identifier_needles(_identifying_dicom_cohort(tmp_path / "in2"), exclude=["roe"])


def _clean_output(out, rng):
    """What an anonymize output looks like: ids, numbers, images, DICOM, an HTML report."""
    import base64
    import json

    vol = np.zeros((8, 8, 8), np.float32)
    vol.ravel()[:4] = np.frombuffer(b" 4821 4821 4821 ", dtype=np.float32)  # the bytes, in image data
    outputs.write_deidentified_nifti(out / "imagesTr" / "syn_0a1b2c3d4e5f_0000.nii.gz", vol, np.eye(4))
    dicom_export.write_dicom_series(out / "dicom" / "syn_0a1b2c3d4e5f" / "0000", vol + 5, np.eye(4), rng=rng,
                            patient_id="syn_0a1b2c3d4e5f")
    payload = base64.b64encode(b"\xfb\xef" + b"\xe3\x6f\x36\xdb" * 3).decode()  # contains '/4821' runs? no
    payload = "ab+" + SHORT_PID + "/cd" + payload  # base64 data that happens to hold the digits
    (out / "privacy_report.html").write_text(f"<p>similarity 0.{SHORT_PID}, shift [1, 0, -1]</p>"
                                            f"<img src='data:image/png;base64,{payload}'>")
    (out / "manifest.json").write_text(json.dumps({"seed": 1234821, "similarity": float(f"0.{SHORT_PID}"),
                                                   "id": "syn_0a1b2c3d4e5f", "code": f"PAT{SHORT_PID}"}))


def test_short_patient_id_found_when_planted_and_not_in_a_clean_output(tmp_path):
    import json

    import pydicom

    needles = identifiers.identifier_needles(_identifying_dicom_cohort(tmp_path / "in"))
    clean = tmp_path / "clean"
    _clean_output(clean, np.random.default_rng(99))
    assert identifiers.scan_for_identifiers(clean, needles) == []

    planted = {  # one plant per place a short id can hide
        "json": lambda o: (o / "manifest.json").write_text(json.dumps({"source": SHORT_PID})),
        "path": lambda o: (o / "imagesTr" / f"syn_{SHORT_PID}_0000.nii.gz").write_bytes(b""),
        "gz-text": lambda o: (o / "notes.txt.gz").write_bytes(gzip.compress(f"case {SHORT_PID}.".encode(), mtime=0)),
        "utf16": lambda o: (o / "log.txt").write_bytes(f"id={SHORT_PID}".encode("utf-16")),
    }
    for name, plant in planted.items():
        out = tmp_path / name
        _clean_output(out, np.random.default_rng(99))
        plant(out)
        hits = identifiers.scan_for_identifiers(out, needles)
        assert [h.needle for h in hits] == [SHORT_PID], (name, hits)
    out = tmp_path / "dicom-value"
    _clean_output(out, np.random.default_rng(99))
    f = next((out / "dicom").rglob("*.dcm"))
    ds = pydicom.dcmread(f)
    ds.PatientID = SHORT_PID
    ds.save_as(f)
    hits = identifiers.scan_for_identifiers(out, needles)
    assert [(h.needle, h.part) for h in hits] == [(SHORT_PID, "dicom")]


def test_long_numeric_needles_do_not_match_inside_longer_numbers(tmp_path):
    (tmp_path / "a.json").write_text('{"steps": 1197001021, "d": "x19700102y"}')
    hits = identifiers.scan_for_identifiers(tmp_path, ["19700102"])
    assert [(h.path.name, h.where) for h in hits] == [("a.json", "content")]  # only inside x...y
    (tmp_path / "a.json").write_text('{"steps": 1197001021}')
    assert identifiers.scan_for_identifiers(tmp_path, ["19700102", "ab"]) == []  # 'ab': below MIN_NEEDLE


@pytest.mark.parametrize("oblique", [False, True])
def test_canonical_affine_drops_position_and_obliquity(oblique):
    import nibabel.orientations as nio

    aff = np.diag([-0.9375, 0.9375, 1.2, 1.0])
    aff[:3, 3] = [117.3, -98.2, 41.7]
    if oblique:
        c, s = np.cos(0.2), np.sin(0.2)
        aff[:3, :3] = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]) @ aff[:3, :3]
    aff = aff[:, [1, 2, 0, 3]]  # voxel axes permuted (e.g. a sagittal acquisition)
    shape = (20, 30, 40)
    out = outputs.canonical_affine(aff, shape)
    assert nio.aff2axcodes(out) == nio.aff2axcodes(aff)
    assert np.count_nonzero(out[:3, :3]) == 3  # a signed permutation times the spacing
    np.testing.assert_allclose(np.abs(out[:3, :3]).sum(axis=0), [0.94, 1.2, 0.94])
    np.testing.assert_allclose(out @ np.r_[(np.array(shape) - 1) / 2, 1.0], [0, 0, 0, 1], atol=1e-12)
    assert not np.allclose(out, aff)
    with pytest.raises(ValueError):
        outputs.canonical_affine(np.eye(3), shape)
