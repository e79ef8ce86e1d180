"""synthkit.io.demo_cohort: the MNI152-based demo cohort and the procedural phantom."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from phantoms import phantom
from scipy import ndimage

from synthkit.errors import UsageError
from synthkit.io.demo_cohort import write_demo_cohort


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    calls = []
    a = write_demo_cohort(
        root / "a", n=2, size=24, seed=3, progress=lambda d, t: calls.append((d, t))
    )
    b = write_demo_cohort(root / "b", n=2, size=24, seed=3)
    c = write_demo_cohort(root / "c", n=1, size=24, seed=4)
    return a, b, c, calls


def test_layout_and_dataset_json(demo):
    a, _, _, calls = demo
    assert calls == [(1, 2), (2, 2)]
    assert a.layout == "nnunet" and [c.case_id for c in a.cases] == ["case_000", "case_001"]
    assert (a.root / "imagesTr" / "case_000_0000.nii.gz").is_file()
    assert (a.root / "labelsTr" / "case_001.nii.gz").is_file()
    dj = json.loads((a.root / "dataset.json").read_text())
    assert dj["channel_names"] == {"0": "T1"}
    assert dj["labels"] == {"background": 0, "head": 1, "tumour": 2}
    assert dj["numTraining"] == 2 and dj["file_ending"] == ".nii.gz"


def test_same_seed_same_bytes_other_seed_differs(demo):
    a, b, c, _ = demo
    for name in (
        "imagesTr/case_000_0000.nii.gz",
        "imagesTr/case_001_0000.nii.gz",
        "labelsTr/case_001.nii.gz",
    ):
        ia, ib = nib.load(a.root / name), nib.load(b.root / name)
        np.testing.assert_array_equal(np.asarray(ia.dataobj), np.asarray(ib.dataobj))
        assert (a.root / name).read_bytes() == (b.root / name).read_bytes()
    ia = np.asarray(nib.load(a.root / "imagesTr/case_000_0000.nii.gz").dataobj)
    ic = np.asarray(nib.load(c.root / "imagesTr/case_000_0000.nii.gz").dataobj)
    assert not np.array_equal(ia, ic)
    # subjects of one cohort differ from each other
    i1 = np.asarray(nib.load(a.root / "imagesTr/case_001_0000.nii.gz").dataobj)
    assert not np.array_equal(ia, i1)


def test_volumes_labels_and_tumour_inside_head(demo):
    a, _, _, _ = demo
    for case in a.cases:
        img = nib.load(case.images[0])
        lab = nib.load(case.mask)
        x, y = np.asarray(img.dataobj), np.asarray(lab.dataobj)
        assert x.shape == y.shape == (24, 24, 24) and x.dtype == np.float32
        np.testing.assert_allclose(img.affine, lab.affine)
        np.testing.assert_allclose(np.diag(img.affine)[:3], [224 / 24] * 3, rtol=1e-6)
        assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
        assert set(np.unique(y).tolist()) == {0, 1, 2}
        tumour, head = y == 2, y > 0
        # the lesion sits inside the head, never touching the background
        assert not (ndimage.binary_dilation(tumour) & ~head).any()
        # and it stands out: a bright enhancing rim and/or a dark necrotic core
        med = np.median(x[head])
        assert x[tumour].max() > 1.2 * med or x[tumour].min() < 0.6 * med
        # the head is brighter than the air around it
        assert np.median(x[head]) > 5 * np.median(x[~head])
        # the header carries nothing identifying
        assert img.header["descrip"].tobytes().strip(b"\0") == b""


def test_phantom():
    img, mask = phantom(size=16, seed=0, channels=2)
    assert img.data.shape == (2, 16, 16, 16) and img.data.dtype == np.float32
    assert mask.data.shape == (1, 16, 16, 16)
    assert set(np.unique(mask.data).tolist()) == {0, 1, 2}
    np.testing.assert_array_equal(img.affine, mask.affine)
    assert not np.array_equal(img.data[0], img.data[1])
    img2, mask2 = phantom(size=16, seed=0, channels=2)
    np.testing.assert_array_equal(img.data, img2.data)
    np.testing.assert_array_equal(mask.data, mask2.data)
    img3, _ = phantom(size=16, seed=1)
    assert not np.array_equal(img.data[0], img3.data[0])
    tumour = mask.data[0] == 2
    assert not (ndimage.binary_dilation(tumour) & (mask.data[0] == 0)).any()


def test_rewrite_over_previous_demo_and_refuse_other_folders(tmp_path):
    out = tmp_path / "demo"
    write_demo_cohort(out, n=2, size=16, seed=0)
    again = write_demo_cohort(out, n=1, size=16, seed=0)
    assert [c.case_id for c in again.cases] == ["case_000"]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["case_000_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["case_000.nii.gz"]
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="not a demo cohort"):
        write_demo_cohort(other, n=1, size=16)
    assert (other / "notes.txt").read_text() == "mine"


def test_first_index_gives_the_same_subjects_and_disjoint_ranges(demo, tmp_path):
    a, _, _, _ = demo
    tail = write_demo_cohort(tmp_path / "tail", n=2, size=24, seed=3, first=1)
    assert [c.case_id for c in tail.cases] == ["case_001", "case_002"]
    name = "imagesTr/case_001_0000.nii.gz"
    assert (tail.root / name).read_bytes() == (a.root / name).read_bytes()  # subject 1 in both
    # rewriting the folder with another range removes the cases outside it
    moved = write_demo_cohort(tmp_path / "tail", n=1, size=24, seed=3, first=5)
    assert [c.case_id for c in moved.cases] == ["case_005"]
    assert sorted(p.name for p in (tmp_path / "tail" / "labelsTr").iterdir()) == ["case_005.nii.gz"]


def test_parallel_writing_gives_the_same_bytes_as_one_process(demo, tmp_path, monkeypatch):
    """Large cohorts are written by one process per core: same files, same progress calls."""
    import synthkit.io.demo_cohort as dc

    a, _, _, _ = demo
    monkeypatch.setattr(dc, "PARALLEL_MIN_VOXELS", 0)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert dc._workers(2, 24) == min(2, len(__import__("os").sched_getaffinity(0)))
    calls = []
    p = write_demo_cohort(tmp_path / "p", n=2, size=24, seed=3, progress=lambda d, t: calls.append((d, t)),
                          clean_copy=tmp_path / "pc")
    assert calls == [(1, 2), (2, 2)]
    for name in ("imagesTr/case_000_0000.nii.gz", "imagesTr/case_001_0000.nii.gz", "labelsTr/case_001.nii.gz",
                 "dataset.json"):
        assert (p.root / name).read_bytes() == (a.root / name).read_bytes(), name
    assert (tmp_path / "pc" / "imagesTr" / "case_001_0000.nii.gz").is_file()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert dc._workers(64, 128) == 1


@pytest.mark.parametrize("index,size", [(3, 40), (11, 56)])
def test_demo_head_skips_the_image_and_keeps_the_labels(index, size):
    """``demo_head`` (the template pool, ~2 CPU-s a 128^3 head) renders no image: its head and
    affine are those of the full subject, bit for bit (no random draw before the labels is skipped)."""
    from synthkit.io.demo_cohort import _subject, demo_head

    head, affine = demo_head(index, size, 7_919_001)
    img, lab, aff, clean = _subject(np.random.default_rng([7_919_001, index]), size)
    assert img is not None and clean is not None
    assert np.array_equal(head, lab > 0) and np.array_equal(affine, aff)
