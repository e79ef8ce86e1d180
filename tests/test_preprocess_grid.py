"""synthkit.preprocess.grid: the one reorientation and the one nearest-neighbour rule."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from synthkit.preprocess.grid import reorient, resize, to_ras, undo_ornt


def _ramp(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.int16)[None, :, None, None]


@pytest.mark.parametrize(("n_in", "n_out"), [(5, 4), (7, 3), (10, 33), (37, 20), (30, 7), (6, 7), (4, 14)])
def test_label_resize_is_the_nearest_centre(n_in, n_out):
    got = resize(_ramp(n_in), (n_out, 1, 1), label=True)[0, :, 0, 0]
    assert got.dtype == np.int16
    centre = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5  # output centres in input voxels
    tie = np.isclose(centre % 1.0, 0.5)
    # the closest input centre; at an exact tie, the higher index
    np.testing.assert_array_equal(got[~tie], np.rint(centre[~tie]).astype(int))
    np.testing.assert_array_equal(got[tie], np.floor(centre[tie]).astype(int) + 1)
    ref = F.interpolate(torch.from_numpy(_ramp(n_in).astype(np.float32))[None], size=(n_out, 1, 1),
                        mode="nearest-exact")[0, 0, :, 0, 0].numpy()
    np.testing.assert_array_equal(got[~tie], ref[~tie])  # torch's rule, off its float32 ties


def test_image_resize_matches_trilinear_align_corners_false():
    x = np.random.default_rng(0).normal(size=(2, 9, 14, 5)).astype(np.float32)
    for shape in ((4, 4, 4), (18, 7, 11), (9, 14, 5)):
        ref = F.interpolate(torch.from_numpy(x)[None], size=shape, mode="trilinear", align_corners=False)[0]
        got = resize(x, shape)
        assert got.shape == (2, *shape) and got.dtype == np.float32
        np.testing.assert_allclose(got, ref.numpy(), atol=1e-5)
    with pytest.raises(ValueError, match="C, D, H, W"):
        resize(x[0], (4, 4, 4))


def test_to_ras_matches_nibabel_and_undoes_exactly():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(2, 4, 5, 6)).astype(np.float32)
    aff = np.array([[0, 0, -2.0, 10], [1.5, 0, 0, -3], [0, -1.0, 0, 7], [0, 0, 0, 1]])
    canon = nib.as_closest_canonical(nib.Nifti1Image(np.moveaxis(data, 0, -1), aff))
    np.testing.assert_array_equal(to_ras(data, aff), np.moveaxis(np.asarray(canon.dataobj), -1, 0))
    out, new_aff, ornt = reorient(data, aff, "RAS")
    np.testing.assert_allclose(new_aff, canon.affine)
    np.testing.assert_array_equal(undo_ornt(out, ornt), data)
