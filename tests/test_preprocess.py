"""synthkit.preprocess: orientation, resampling, crop/pad, intensities, labels, and the way back."""

from __future__ import annotations

import dataclasses
import json

import nibabel as nib
import numpy as np
import pytest
import torch

from synthkit.config import PreprocessConfig
from synthkit.errors import CohortError, UsageError
from synthkit.io.nifti import read_nifti
from synthkit.io.volume import Volume
from synthkit.preprocess import GridRecord, one_hot, preprocess_case, reorient, to_original_grid

SHAPE = (20, 14, 9)  # anisotropic voxels 1.0 x 1.5 x 3.0 mm -> 20 x 21 x 27 mm


def _rot(ax: int, deg: float) -> np.ndarray:
    t = np.deg2rad(deg)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != ax]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def lps_affine() -> np.ndarray:
    """Axes stored as L, P, S with spacing 1.0 x 1.5 x 3.0 mm."""
    a = np.diag([-1.0, -1.5, 3.0, 1.0])
    a[:3, 3] = [12.0, 9.0, -14.0]
    return a


def oblique_affine() -> np.ndarray:
    """Permuted, flipped and rotated (oblique) axes, spacing 1.0 x 1.5 x 3.0 mm."""
    lin = (
        _rot(2, 17)
        @ _rot(0, -9)
        @ np.array([[0, 0, -1], [1, 0, 0], [0, -1, 0]], float)
        @ np.diag([1.0, 1.5, 3.0])
    )
    a = np.eye(4)
    a[:3, :3] = lin
    a[:3, 3] = [-30.0, 4.5, 22.0]
    return a


def head_case(
    rng: np.random.Generator, shape=SHAPE, channels: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (ellipsoid head 1, box tumour 2) and a matching image (C, D, H, W)."""
    g = np.indices(shape).astype(float)
    c = (np.array(shape) - 1)[:, None, None, None] / 2
    semi = np.array(shape)[:, None, None, None] * 0.4
    head = (((g - c) / semi) ** 2).sum(0) < 1
    lab = head.astype(np.int16)
    lab[8:12, 6:9, 3:6] = 2
    img = np.stack(
        [
            (50.0 + 20 * k) * head + 30.0 * (lab == 2) + 2.0 * g[0] + rng.normal(0, 1.0, shape)
            for k in range(channels)
        ]
    ).astype(np.float32)
    return lab, img


def write_case(
    tmp_path, lab: np.ndarray, img: np.ndarray, affine: np.ndarray
) -> tuple[Volume, Volume]:
    """Write with nibabel, read back with synthkit (real files, real headers)."""
    ip, mp = tmp_path / "img.nii.gz", tmp_path / "mask.nii.gz"
    data = img[0] if img.shape[0] == 1 else np.moveaxis(img, 0, -1)
    nib.save(nib.Nifti1Image(data, affine), ip)
    nib.save(nib.Nifti1Image(lab.astype(np.uint8), affine), mp)
    return read_nifti(ip), read_nifti(mp, is_label=True)


def world_centroid(labels: np.ndarray, affine: np.ndarray, value: int) -> np.ndarray:
    idx = np.argwhere(labels == value).mean(0)
    return affine[:3, :3] @ idx + affine[:3, 3]


@pytest.mark.parametrize("affine", [lps_affine(), oblique_affine()], ids=["LPS", "oblique"])
def test_round_trip_without_resampling_is_exact(tmp_path, affine):
    rng = np.random.default_rng(0)
    lab, img = head_case(rng)
    image, mask = write_case(tmp_path, lab, img, affine)
    cfg = PreprocessConfig(target_shape=(24, 24, 24))
    pre = preprocess_case(image, mask, cfg)
    rec = pre.record
    assert pre.image.shape == (1, 24, 24, 24) and pre.labels.shape == (24, 24, 24)
    assert rec.zoom == 1.0 and not rec.truncated
    assert nib.aff2axcodes(np.asarray(rec.output_affine)) == ("R", "A", "S")

    back_lab = to_original_grid(pre.labels, rec, is_label=True)
    back_img = to_original_grid(pre.image, rec)
    assert back_lab.data.shape == (1, *SHAPE) and back_img.data.shape == (1, *SHAPE)
    np.testing.assert_array_equal(back_lab.affine, mask.affine)
    np.testing.assert_array_equal(back_img.affine, mask.affine)
    np.testing.assert_array_equal(back_lab.data[0], lab)  # whole head inside the crop: identical
    lo, hi = rec.lo[0], rec.hi[0]
    np.testing.assert_allclose(back_img.data[0], np.clip(img[0], lo, hi), atol=1e-4 * (hi - lo))


def test_crop_keeps_labels_identical_inside_the_box(tmp_path):
    rng = np.random.default_rng(1)
    lab, img = head_case(rng, shape=(30, 26, 12))
    lab[lab == 1] = 0  # foreground = tumour only: the 8^3 box lies well inside the volume
    image, mask = write_case(tmp_path, lab, img, oblique_affine())
    pre = preprocess_case(image, mask, PreprocessConfig(target_shape=(8, 8, 8)))
    back = to_original_grid(pre.labels, pre.record, is_label=True).data[0]
    assert back.shape == lab.shape
    np.testing.assert_array_equal(back, lab)
    # the image inside the box is exact, outside it is background (lo)
    img_back = to_original_grid(pre.image, pre.record).data[0]
    box = np.zeros(lab.shape, bool)
    ones = to_original_grid(np.ones((1, 8, 8, 8), np.int16), pre.record, is_label=True).data[0] == 1
    box[ones] = True
    assert 0 < box.sum() == 8**3
    lo, hi = pre.record.lo[0], pre.record.hi[0]
    np.testing.assert_allclose(img_back[box], np.clip(img[0], lo, hi)[box], atol=1e-4 * (hi - lo))
    np.testing.assert_allclose(img_back[~box], lo, atol=1e-4 * (hi - lo))


def test_round_trip_with_resampling(tmp_path):
    rng = np.random.default_rng(2)
    lab, img = head_case(rng)
    image, mask = write_case(tmp_path, lab, img, oblique_affine())
    cfg = PreprocessConfig(target_shape=(24, 24, 32), target_spacing=(1.2, 1.2, 1.2))
    pre = preprocess_case(image, mask, cfg)
    np.testing.assert_allclose(pre.record.output_spacing, (1.2, 1.2, 1.2), rtol=1e-9)
    assert not pre.record.truncated
    back_lab = to_original_grid(pre.labels, pre.record, is_label=True)
    back_img = to_original_grid(pre.image, pre.record)
    assert back_lab.data.shape == (1, *SHAPE)
    np.testing.assert_array_equal(back_img.affine, mask.affine)
    agree = (back_lab.data[0] == lab).mean()
    assert agree > 0.9
    assert set(np.unique(back_lab.data).tolist()) <= {0, 1, 2}  # nearest neighbour: no new values
    lo, hi = pre.record.lo[0], pre.record.hi[0]
    err = np.abs(back_img.data[0] - np.clip(img[0], lo, hi)) / (hi - lo)
    inner = (lab > 0) & (np.abs(np.gradient(lab.astype(float))).sum(0) == 0)  # away from edges
    assert np.median(err[inner]) < 0.05
    # world position of the tumour is preserved by the output affine
    np.testing.assert_allclose(
        world_centroid(pre.labels.numpy(), np.asarray(pre.record.output_affine), 2),
        world_centroid(lab, mask.affine, 2),
        atol=1.5,
    )


def test_labels_never_interpolated_linearly(tmp_path):
    rng = np.random.default_rng(3)
    lab, img = head_case(rng)
    lab[lab == 2] = 7  # a linear interpolation between 1 and 7 would create 2..6
    image, mask = write_case(tmp_path, lab, img, lps_affine())
    pre = preprocess_case(
        image,
        mask,
        PreprocessConfig(
            target_shape=(16, 16, 16), target_spacing=(0.7, 0.9, 1.3), mask_labels=(1, 7)
        ),
    )
    assert set(pre.labels.unique().tolist()) == {0, 1, 7}


def test_image_and_mask_stay_aligned(tmp_path):
    """A bright region painted into the image from the labels still sits on those labels."""
    rng = np.random.default_rng(4)
    lab, _ = head_case(rng)
    lab[(lab == 1) & (np.indices(SHAPE)[0] < 9)] = 2  # a large "tumour": half of the head
    img = np.where(lab > 0, 100.0 + 100.0 * (lab == 2), 0.0).astype(np.float32)[None]
    image, mask = write_case(tmp_path, lab, img, oblique_affine())
    for cfg, min_dice, tol in (
        (PreprocessConfig(target_shape=(24, 24, 24)), 1.0, 1e-9),  # integer crop/pad: exact
        (PreprocessConfig(target_shape=(12, 12, 12)), 0.85, 0.3),  # zoomed to fit
        (PreprocessConfig(target_shape=(24, 24, 24), target_spacing=(1.1, 1.1, 1.1)), 0.85, 0.3),
    ):
        pre = preprocess_case(image, mask, cfg)
        bright, tumour = pre.image[0].numpy() > 0, pre.labels.numpy() == 2
        dice = 2 * (bright & tumour).sum() / (bright.sum() + tumour.sum())
        assert dice >= min_dice, cfg
        # centroids agree to a fraction of a voxel: no shift between image and labels
        np.testing.assert_allclose(
            np.argwhere(bright).mean(0), np.argwhere(tumour).mean(0), atol=tol
        )


def test_zoom_when_head_does_not_fit(tmp_path):
    rng = np.random.default_rng(5)
    lab, img = head_case(rng)
    image, mask = write_case(tmp_path, lab, img, lps_affine())
    pre = preprocess_case(image, mask, PreprocessConfig(target_shape=(8, 8, 8)))
    rec = pre.record
    assert rec.zoom < 1.0 and not rec.truncated
    # uniform zoom: every axis' spacing grows by the same factor (aspect ratio kept)
    np.testing.assert_allclose(
        np.asarray(rec.output_spacing) / np.array([1.0, 1.5, 3.0]), 1 / rec.zoom, rtol=1e-9
    )
    assert (pre.labels == 2).any()
    # the whole head fits: its box touches at most the volume edges, nothing is lost
    back = to_original_grid(pre.labels, rec, is_label=True).data[0]
    assert back.shape == lab.shape and (back > 0).sum() > 0.8 * (lab > 0).sum()


def test_target_spacing_with_big_head_is_cropped_and_flagged(tmp_path):
    rng = np.random.default_rng(6)
    lab, img = head_case(rng)
    image, mask = write_case(tmp_path, lab, img, lps_affine())
    pre = preprocess_case(
        image, mask, PreprocessConfig(target_shape=(8, 8, 8), target_spacing=(1.0, 1.0, 1.0))
    )
    assert pre.record.truncated and pre.labels.shape == (8, 8, 8)


def test_orientation_option(tmp_path):
    rng = np.random.default_rng(7)
    lab, img = head_case(rng)
    image, mask = write_case(tmp_path, lab, img, np.diag([1.0, 1.5, 3.0, 1.0]))
    pre = preprocess_case(
        image, mask, PreprocessConfig(target_shape=(24, 24, 24), orientation="LPS")
    )
    assert nib.aff2axcodes(np.asarray(pre.record.output_affine)) == ("L", "P", "S")
    back = to_original_grid(pre.labels, pre.record, is_label=True).data[0]
    np.testing.assert_array_equal(back, lab)
    with pytest.raises(UsageError):
        preprocess_case(image, mask, PreprocessConfig(orientation="RAR"))


def test_reorient_matches_nibabel_canonical():
    rng = np.random.default_rng(8)
    arr = rng.normal(size=SHAPE).astype(np.float32)
    aff = oblique_affine()
    out, new_aff, _ = reorient(arr, aff, "RAS")
    can = nib.as_closest_canonical(nib.Nifti1Image(arr, aff))
    np.testing.assert_array_equal(out, np.asarray(can.dataobj))
    np.testing.assert_allclose(new_aff, can.affine, atol=1e-9)


def test_intensities_per_channel_in_range(tmp_path):
    rng = np.random.default_rng(9)
    lab, img = head_case(rng, channels=2)
    img[1] *= 10.0
    image, mask = write_case(tmp_path, lab, img, lps_affine())
    cfg = PreprocessConfig(target_shape=(24, 24, 24), clip_percentiles=(1.0, 99.0), intensity_bounds="head")
    pre = preprocess_case(image, mask, cfg)
    x = pre.image
    assert x.shape == (2, 24, 24, 24) and x.dtype == torch.float32
    assert x.min() >= -1.0 and x.max() <= 1.0
    inside = pre.labels > 0
    for c in range(2):
        head_vals = img[c][lab > 0]
        np.testing.assert_allclose(pre.record.lo[c], np.percentile(head_vals, 1.0), rtol=1e-5)
        np.testing.assert_allclose(pre.record.hi[c], np.percentile(head_vals, 99.0), rtol=1e-5)
        assert x[c][inside].max() == 1.0 and x[c][~inside].min() == -1.0
    assert pre.record.hi[1] > 5 * pre.record.hi[0]
    # per label (the default): the same percentiles inside each label widen the bounds, never narrow them
    per = preprocess_case(image, mask, dataclasses.replace(cfg, intensity_bounds="per_label"))
    for c in range(2):
        widest = [np.percentile(img[c][lab == v], [1.0, 99.0]) for v in np.unique(lab[lab > 0])]
        np.testing.assert_allclose(per.record.lo[c], min(pre.record.lo[c], *(w[0] for w in widest)), rtol=1e-5)
        np.testing.assert_allclose(per.record.hi[c], max(pre.record.hi[c], *(w[1] for w in widest)), rtol=1e-5)


def test_masks_only(tmp_path):
    rng = np.random.default_rng(10)
    lab, img = head_case(rng)
    image, mask = write_case(tmp_path, lab, img, oblique_affine())
    cfg = PreprocessConfig(target_shape=(24, 24, 24), target_spacing=(1.3, 1.3, 1.3))
    only = preprocess_case(None, mask, cfg)
    both = preprocess_case(image, mask, cfg)
    assert only.image is None and only.record.lo == ()
    torch.testing.assert_close(only.labels, both.labels)
    assert only.record.output_affine == both.record.output_affine
    # a generated image maps back geometrically, staying in [-1, 1] without intensity bounds
    gen = torch.zeros(1, 24, 24, 24)
    back = to_original_grid(gen, only.record)
    assert back.data.shape == (1, *SHAPE) and back.data.min() >= -1.0 and back.data.max() <= 1.0


def test_label_map_and_brain_label(tmp_path):
    """BraTS-style: tumour labels 1, 2, 4 (4 -> 3) inside a skull-stripped brain; brain label 4."""
    rng = np.random.default_rng(11)
    g = np.indices(SHAPE).astype(float)
    c = (np.array(SHAPE) - 1)[:, None, None, None] / 2
    brain = (((g - c) / (np.array(SHAPE)[:, None, None, None] * 0.4)) ** 2).sum(0) < 1
    lab = np.zeros(SHAPE, np.int16)
    lab[8:12, 6:9, 3:6] = 2
    lab[9:11, 7:8, 4:5] = 4
    lab[12, 6:9, 3:6] = 1
    img = np.where(brain, 80.0 + rng.normal(0, 3, SHAPE), 0.0).astype(np.float32)[None]
    image, mask = write_case(tmp_path, lab, img, lps_affine())
    cfg = PreprocessConfig(
        target_shape=(24, 24, 24), label_map={"4": 3}, brain_label=4, mask_labels=(1, 2, 3, 4)
    )
    pre = preprocess_case(image, mask, cfg)
    back = to_original_grid(pre.labels, pre.record, is_label=True).data[0]
    np.testing.assert_array_equal(back[lab == 4], 3)
    np.testing.assert_array_equal(back[lab == 2], 2)
    np.testing.assert_array_equal(back[(lab == 0) & brain], 4)
    np.testing.assert_array_equal(back[~brain & (lab == 0)], 0)
    # without the remapping, label 4 collides with mask_labels: refused with a clear message
    with pytest.raises(CohortError, match="not in mask_labels"):
        preprocess_case(
            image, mask, PreprocessConfig(target_shape=(24, 24, 24), mask_labels=(1, 2))
        )


def test_grid_mismatch_and_bad_input_are_cohort_errors(tmp_path):
    rng = np.random.default_rng(12)
    lab, img = head_case(rng)
    image, mask = write_case(tmp_path, lab, img, lps_affine())
    shifted = Volume(image.data, image.affine + _shift(5.0))
    with pytest.raises(CohortError, match="not on the same grid"):
        preprocess_case(shifted, mask, PreprocessConfig())
    bad = image.data.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(CohortError, match="NaN"):
        preprocess_case(Volume(bad, image.affine), mask, PreprocessConfig())


def _shift(mm: float) -> np.ndarray:
    s = np.zeros((4, 4))
    s[0, 3] = mm
    return s


def test_record_is_json_serialisable(tmp_path):
    rng = np.random.default_rng(13)
    lab, img = head_case(rng)
    image, mask = write_case(tmp_path, lab, img, oblique_affine())
    rec = preprocess_case(
        image, mask, PreprocessConfig(target_shape=(16, 16, 16), target_spacing=(1.5, 1.5, 1.5))
    ).record
    again = GridRecord.from_dict(json.loads(json.dumps(rec.to_dict())))
    assert again == rec
    with pytest.raises(ValueError, match="unknown"):
        GridRecord.from_dict({**rec.to_dict(), "extra": 1})


def test_one_hot():
    lab = torch.tensor([[[0, 1], [2, 3]]])  # (1, 2, 2) -> D, H, W
    oh = one_hot(lab, (2, 1))
    assert oh.shape == (2, 1, 2, 2) and oh.dtype == torch.float32
    torch.testing.assert_close(oh[0], (lab == 2).float())
    torch.testing.assert_close(oh[1], (lab == 1).float())
    batch = one_hot(torch.stack([lab, lab]), (1, 2))
    assert batch.shape == (2, 2, 1, 2, 2)
    arr = one_hot(lab.numpy(), (1, 2, 3))
    assert isinstance(arr, np.ndarray) and arr.shape == (3, 1, 2, 2) and arr.sum() == 3
    with pytest.raises(ValueError):
        one_hot(torch.zeros(2, 2), (1,))
