"""check_cohort: every kind of problem is named on its case, good cases stay usable."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from test_io_builders import (
    AFFINE,
    axial_positions,
    dicom_pixels,
    image_array,
    make_dicom_cohort,
    make_flat,
    make_nnunet,
    mask_array,
    write_dicom_series,
)

from synthkit.errors import CohortError
from synthkit.io.check import check_cohort, cohort_report
from synthkit.io.cohort import discover_cohort
from synthkit.io.nifti import write_nifti


def _by_id(reports):
    return {r.id: r for r in reports}


def make_bad_flat(root):
    """good1, good2 plus one case per kind of problem."""
    make_flat(root, ["good1", "good2", "trunc", "nan", "shape", "empty", "nomask", "flat2d"],
              skip_mask=["nomask"])
    p = root / "images" / "trunc.nii.gz"
    p.write_bytes(p.read_bytes()[:400])
    img = image_array(1.0)
    img[3, 4, 5] = np.nan
    img[0, 0, 0] = np.inf
    write_nifti(root / "images" / "nan.nii.gz", img, AFFINE)
    write_nifti(root / "masks" / "shape.nii.gz", mask_array(1, (16, 16, 12)), AFFINE, is_label=True)
    write_nifti(root / "masks" / "empty.nii.gz", np.zeros((16, 16, 16)), AFFINE, is_label=True)
    write_nifti(root / "images" / "flat2d.nii.gz", image_array(1.0, (16, 16, 1)), AFFINE)
    write_nifti(root / "masks" / "flat2d.nii.gz", np.ones((16, 16, 1)), AFFINE, is_label=True)
    return root


def test_each_bad_case_is_named_with_its_reason(tmp_path):
    reports = _by_id(check_cohort(make_bad_flat(tmp_path)))
    assert len(reports) == 8
    assert reports["good1"].ok and reports["good2"].ok
    assert reports["good1"].problems == []
    assert reports["good1"].shape == (16, 16, 16)
    assert reports["good1"].spacing == pytest.approx((1.5, 1.25, 2.0))
    assert reports["good1"].labels == [0, 1] and reports["good1"].channels == 1

    def only(cid):
        r = reports[cid]
        assert not r.ok and len(r.problems) == 1, r.problems
        return r.problems[0]

    assert only("trunc").startswith("images/trunc.nii.gz: truncated or corrupt")
    assert only("nan") == "image has 2 NaN/Inf voxels"
    assert only("shape") == "mask grid differs from image: shape (16, 16, 16) vs (16, 16, 12)"
    assert only("empty") == "empty mask (no foreground)"
    assert only("nomask") == "missing mask"
    assert reports["flat2d"].problems == ["image not 3D (shape (16, 16, 1))",
                                          "mask not 3D (shape (16, 16, 1))"]


def test_world_geometry_tolerance(tmp_path):
    make_flat(tmp_path, ["tiny", "shifted", "rotated", "zoomed"])
    nudged = AFFINE.copy()
    nudged[:3, 3] += 1e-5  # far below 1e-3 mm
    write_nifti(tmp_path / "masks" / "tiny.nii.gz", mask_array(1), nudged, is_label=True)
    shifted = AFFINE.copy()
    shifted[0, 3] += 0.01
    write_nifti(tmp_path / "masks" / "shifted.nii.gz", mask_array(2), shifted, is_label=True)
    a = np.deg2rad(0.1)  # same origin, axes turned by 0.1 degree (1.7e-3 rad)
    rotated = AFFINE.copy()
    rotated[:3, :3] = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]) @ AFFINE[:3, :3]
    write_nifti(tmp_path / "masks" / "rotated.nii.gz", mask_array(3), rotated, is_label=True)
    zoomed = AFFINE.copy()
    zoomed[2, 2] = 2.01
    write_nifti(tmp_path / "masks" / "zoomed.nii.gz", mask_array(4), zoomed, is_label=True)
    reports = _by_id(check_cohort(tmp_path))
    assert reports["tiny"].ok
    assert reports["shifted"].problems == ["mask grid differs from image: origin differs by 0.01 mm"]
    assert reports["rotated"].problems[0].startswith("mask grid differs from image: orientation")
    assert reports["zoomed"].problems[0].startswith("mask grid differs from image: spacing")


def test_labels_outside_declared_set(tmp_path):
    make_nnunet(tmp_path, ["a", "b"], channels=("T1",), labels={"background": 0, "tumour": 1})
    m = mask_array(1)
    m[0, 0, 0] = 7
    write_nifti(tmp_path / "labelsTr" / "b.nii.gz", m, AFFINE, is_label=True)
    reports = _by_id(check_cohort(tmp_path))
    assert reports["a"].ok
    assert reports["b"].problems == ["labels outside declared set: [7]"]
    assert reports["b"].labels == [0, 1, 7]


def test_channel_on_other_grid(tmp_path):
    make_nnunet(tmp_path, ["a", "b"], channels=("T1", "T2"))
    write_nifti(tmp_path / "imagesTr" / "b_0001.nii.gz", image_array(1.0, (16, 16, 15)), AFFINE)
    reports = _by_id(check_cohort(tmp_path))
    assert reports["a"].ok
    assert reports["b"].problems == [
        ("imagesTr/b_0001.nii.gz: channel grid differs from b_0000.nii.gz "
         "(shape (16, 16, 16) vs (16, 16, 15))")
    ]


def test_channel_count_differs_from_declared(tmp_path):
    make_flat(tmp_path, ["one", "two"])
    write_nifti(tmp_path / "images" / "two.nii.gz", np.stack([image_array(1), image_array(2)]), AFFINE)
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "CT"}, "labels": {"background": 0, "t": 1, "u": 2}}))
    reports = _by_id(check_cohort(tmp_path))
    assert reports["one"].ok
    assert reports["two"].problems == ["image has 2 channel(s), the cohort has 1"]


def test_dicom_irregular_spacing_reported_per_case(tmp_path):
    make_dicom_cohort(tmp_path, ["ok1", "irr"])
    folder = tmp_path / "images" / "irr"
    for p in folder.iterdir():
        p.unlink()
    write_dicom_series(folder, dicom_pixels(4), positions=[(-100, -120, z) for z in (-50, -48, -46, -43)])
    reports = _by_id(check_cohort(tmp_path))
    assert reports["ok1"].ok, reports["ok1"].problems
    assert reports["ok1"].shape == (5, 6, 4) and reports["ok1"].spacing == pytest.approx((0.7, 0.5, 2.0))
    assert len(reports["irr"].problems) == 1
    assert reports["irr"].problems[0].startswith("images/irr: irregular slice spacing: gaps from 2 to 3 mm")


def test_dicom_mask_on_wrong_grid(tmp_path):
    make_dicom_cohort(tmp_path, ["d"])
    folder = tmp_path / "images" / "d"
    for p in folder.iterdir():
        p.unlink()
    write_dicom_series(folder, dicom_pixels(4), positions=axial_positions(4, first=(-100, -120, -49)))
    (r,) = check_cohort(tmp_path)
    assert r.problems == ["mask grid differs from image: origin differs by 1 mm"]


def test_strict_stops_at_first_bad_case(tmp_path):
    make_bad_flat(tmp_path)
    with pytest.raises(CohortError, match="case empty: empty mask"):
        check_cohort(tmp_path, strict=True)


def test_report_document_and_progress_callback(tmp_path):
    make_flat(tmp_path, ["a", "b"], skip_mask=["b"])
    cohort = discover_cohort(tmp_path)
    seen = []
    reports = check_cohort(cohort, progress=lambda done, total: seen.append((done, total)))
    assert seen == [(1, 2), (2, 2)]
    doc = json.loads(json.dumps(cohort_report(cohort, reports)))
    assert doc["layout"] == "flat" and doc["n_cases"] == 2 and doc["n_ok"] == 1
    assert doc["cases"][1] == {"id": "b", "ok": False, "problems": ["missing mask"],
                               "shape": [16, 16, 16], "spacing": [1.5, 1.25, 2.0], "labels": None,
                               "channels": 1}


def test_masks_only_check(tmp_path):
    write_nifti(tmp_path / "m1.nii.gz", mask_array(), AFFINE, is_label=True)
    nib.save(nib.Nifti1Image(np.full((4, 4, 4), 0.5, np.float32), AFFINE), tmp_path / "m2.nii.gz")
    reports = _by_id(check_cohort(tmp_path, need_images=False))
    assert reports["m1"].ok and reports["m1"].channels is None
    assert "non-integer" in reports["m2"].problems[0]
