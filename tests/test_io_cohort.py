"""Cohort discovery in every layout, pairing by case id, read_image / read_mask."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_io_builders import (
    AFFINE,
    BRATS_2023,
    image_array,
    make_brats,
    make_dicom_cohort,
    make_flat,
    make_nnunet,
    mask_array,
)

from synthkit.errors import CohortError, UsageError
from synthkit.io.cohort import discover_cohort, read_image, read_mask
from synthkit.io.nifti import write_nifti


def test_flat_pairs_by_id_not_sort_order(tmp_path):
    # ids whose sort order differs from creation order; the middle mask is missing, so pairing
    # by sorted position would shift every later case onto the wrong mask.
    ids = ["zeta", "Alpha", "case10", "case2", "m"]
    make_flat(tmp_path, ids, skip_mask=["case2"])
    cohort = discover_cohort(tmp_path)
    assert cohort.layout == "flat"
    assert sorted(c.case_id for c in cohort) == sorted(ids)
    assert cohort.channel_names == ("image",)
    for k, cid in enumerate(ids):
        case = cohort.case(cid)
        img = read_image(case)
        assert img.data.shape == (1, 16, 16, 16)
        assert img.data.mean() == pytest.approx(k, abs=1e-4)
        if cid == "case2":
            assert case.mask is None and case.problems == ("missing mask",)
            with pytest.raises(CohortError, match="no mask"):
                read_mask(case)
        else:
            assert case.problems == ()
            msk = read_mask(case)
            assert msk.data.dtype == np.int16 and msk.data.shape == (1, 16, 16, 16)
            assert int(msk.data.max()) == k + 1  # the mask written for this very case


def test_flat_4d_images_and_mixed_suffixes(tmp_path):
    make_flat(tmp_path, ["a", "b"], channels=3)
    (tmp_path / "masks" / "b.nii.gz").rename(tmp_path / "masks" / "b.nii")
    write_nifti(tmp_path / "masks" / "orphan.nii.gz", mask_array(), AFFINE, is_label=True)
    cohort = discover_cohort(tmp_path)
    assert cohort.channel_names == ("channel_0", "channel_1", "channel_2")
    b = cohort.case("b")
    assert b.mask is not None and b.mask.name == "b.nii"
    img = read_image(b)
    assert img.data.shape == (3, 16, 16, 16)
    assert [round(float(img.data[c].mean())) for c in range(3)] == [1, 11, 21]
    assert cohort.case("orphan").problems == ("missing image",)
    assert cohort.case("orphan").images == ()


def test_nnunet_v2_channels_labels_and_test_split(tmp_path):
    make_nnunet(tmp_path, ["c3", "c1", "c2"], channels=("T1", "FLAIR"),
                labels={"background": 0, "edema": 1, "core": 2}, test_ids=["t9"])
    cohort = discover_cohort(tmp_path)
    assert cohort.layout == "nnunet"
    assert cohort.channel_names == ("T1", "FLAIR")
    assert cohort.labels == {"background": 0, "edema": 1, "core": 2}
    assert [c.case_id for c in cohort] == ["c1", "c2", "c3", "t9"]
    c3 = cohort.case("c3")  # written first: channel means 0 and 10
    img = read_image(c3)
    assert img.data.shape == (2, 16, 16, 16)
    assert [round(float(img.data[c].mean())) for c in range(2)] == [0, 10]
    t9 = cohort.case("t9")
    assert t9.mask is None and not t9.expects_mask and t9.problems == ()


def test_nnunet_missing_channel_is_a_problem_and_read_names_it(tmp_path):
    make_nnunet(tmp_path, ["a", "b"], channels=("T1", "T2"))
    (tmp_path / "imagesTr" / "b_0001.nii.gz").unlink()
    (tmp_path / "labelsTr" / "a.nii.gz").unlink()
    cohort = discover_cohort(tmp_path)
    assert cohort.case("b").problems == ("missing image b_0001.nii.gz",)
    assert cohort.case("a").problems == ("missing mask",)
    with pytest.raises(CohortError, match="b_0001.nii.gz"):
        read_image(cohort.case("b"))


def test_nnunet_v1_dataset_json_is_understood(tmp_path):
    make_nnunet(tmp_path, ["x"], channels=("MRI",))
    (tmp_path / "dataset.json").write_text(json.dumps({
        "name": "old", "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "tumour"}, "numTraining": 1,
        "training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}],
    }))
    cohort = discover_cohort(tmp_path)
    assert cohort.channel_names == ("MRI",)
    assert cohort.labels == {"background": 0, "tumour": 1}
    assert cohort.allowed_labels == frozenset({0, 1})


def test_decathlon_style_4d_files_without_channel_suffix(tmp_path):
    write_nifti(tmp_path / "imagesTr" / "BRATS_001.nii.gz",
                np.stack([image_array(0), image_array(10)]), AFFINE)
    write_nifti(tmp_path / "labelsTr" / "BRATS_001.nii.gz", mask_array(), AFFINE, is_label=True)
    cohort = discover_cohort(tmp_path)
    (case,) = cohort.cases
    assert case.case_id == "BRATS_001" and case.problems == ()
    assert read_image(case).data.shape == (2, 16, 16, 16)


@pytest.mark.parametrize("names,sep,enhancing", [(("t1", "t1ce", "t2", "flair"), "_", 4),
                                                 (BRATS_2023, "-", 3)])
def test_brats_channel_order_and_labels(tmp_path, names, sep, enhancing):
    make_brats(tmp_path, ["BraTS-001", "BraTS-000"], names=names, sep=sep, seg_labels=(1, 2, enhancing))
    cohort = discover_cohort(tmp_path)
    assert cohort.layout == "brats"
    assert cohort.channel_names == ("T1", "T1ce", "T2", "FLAIR")
    assert cohort.labels == {"background": 0, "necrotic core": 1, "edema": 2, "enhancing": enhancing}
    case = cohort.case("BraTS-001")
    assert [p.name for p in case.images] == [f"BraTS-001{sep}{n}.nii.gz" for n in names]
    img = read_image(case)
    assert [round(float(img.data[c].mean())) for c in range(4)] == [0, 100, 200, 300]
    assert set(np.unique(read_mask(case).data)) == {0, 1, 2, enhancing}


def test_brats_missing_modality_and_seg(tmp_path):
    make_brats(tmp_path, ["p1"])
    (tmp_path / "p1" / "p1_t2.nii.gz").unlink()
    (tmp_path / "p1" / "p1_seg.nii.gz").unlink()
    case = discover_cohort(tmp_path).case("p1")
    assert case.problems == ("missing T2 image", "missing mask")
    with pytest.raises(CohortError, match="p1_t2.nii.gz"):
        read_image(case)


def test_dicom_cohort_reads_series_on_mask_grid(tmp_path):
    make_dicom_cohort(tmp_path, ["s2", "s1"])
    cohort = discover_cohort(tmp_path)
    assert cohort.layout == "dicom"
    assert cohort.channel_names == ("MR",)
    case = cohort.case("s1")
    img, msk = read_image(case), read_mask(case)
    assert img.data.shape == (1, 5, 6, 4) == msk.data.shape
    np.testing.assert_allclose(img.affine, msk.affine, atol=1e-6)


def test_masks_only_folder_needs_need_images_false(tmp_path):
    for cid in ("m1", "m2"):
        write_nifti(tmp_path / f"{cid}.nii.gz", mask_array(), AFFINE, is_label=True)
    with pytest.raises(UsageError, match="unrecognised cohort layout"):
        discover_cohort(tmp_path)
    cohort = discover_cohort(tmp_path, need_images=False)
    assert cohort.layout == "masks" and not cohort.has_images
    assert [c.case_id for c in cohort] == ["m1", "m2"]
    assert read_mask(cohort.case("m2")).data.shape == (1, 16, 16, 16)


def test_masks_subfolder_and_nnunet_labels_only_with_need_images_false(tmp_path):
    make_flat(tmp_path / "f", ["a"])
    (tmp_path / "f" / "images" / "a.nii.gz").unlink()
    (tmp_path / "f" / "images").rmdir()
    with pytest.raises(UsageError, match="no images/"):
        discover_cohort(tmp_path / "f")
    assert discover_cohort(tmp_path / "f", need_images=False).layout == "masks"

    make_nnunet(tmp_path / "n", ["a"])
    for p in (tmp_path / "n" / "imagesTr").iterdir():
        p.unlink()
    (tmp_path / "n" / "imagesTr").rmdir()
    cohort = discover_cohort(tmp_path / "n", need_images=False)
    assert cohort.layout == "nnunet" and cohort.case("a").problems == ()


def test_usage_errors_for_non_cohorts(tmp_path):
    with pytest.raises(UsageError, match="folder not found"):
        discover_cohort(tmp_path / "nope")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(UsageError, match="not a folder"):
        discover_cohort(tmp_path / "file.txt")
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(UsageError, match="no cases"):
        discover_cohort(tmp_path / "empty")
