"""DICOM series -> RAS volume: slice order, voxel axes, world geometry, rescale, bad series.

Expected affines are worked out by hand from the DICOM definition (PS3.3 C.7.6.2.1.1):
a pixel at row r, column c of a slice has LPS position
``IPP + c * PixelSpacing[1] * IOP[:3] + r * PixelSpacing[0] * IOP[3:]``; RAS negates x and y.
synthkit's voxel axes are (i = column, j = row, k = slice along the normal IOP[:3] x IOP[3:]).
"""

from __future__ import annotations

import numpy as np
import pytest
from test_io_builders import axial_positions, dicom_pixels, write_dicom_series

from synthkit.errors import CohortError
from synthkit.io.dicom import read_dicom_series


def test_axial_series_known_affine_and_voxel_layout(tmp_path):
    # IOP [1,0,0, 0,1,0], first slice at LPS (-100,-120,-50), PixelSpacing (row 0.5, col 0.7),
    # slices 2 mm apart along +z. Column index i moves +x(L) 0.7 mm -> RAS x -0.7;
    # row index j moves +y(P) 0.5 mm -> RAS y -0.5; k moves +z(S) 2 mm; origin (100, 120, -50).
    expected = np.array([
        [-0.7, 0.0, 0.0, 100.0],
        [0.0, -0.5, 0.0, 120.0],
        [0.0, 0.0, 2.0, -50.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
    px = dicom_pixels(4, rows=6, cols=5)
    write_dicom_series(tmp_path / "s", px, positions=axial_positions(4), file_order=[2, 0, 3, 1],
                       instance_numbers=[3, 1, 4, 2])
    vol = read_dicom_series(tmp_path / "s")
    np.testing.assert_allclose(vol.affine, expected, atol=1e-6)
    assert vol.data.shape == (1, 5, 6, 4)  # (C, columns, rows, slices)
    assert vol.data.dtype == np.float32
    # data[0, i, j, k] = slice k pixel (row j, column i): value 100 k + 10 j + i
    i, j, k = np.meshgrid(np.arange(5), np.arange(6), np.arange(4), indexing="ij")
    np.testing.assert_array_equal(vol.data[0], 100 * k + 10 * j + i)
    assert vol.spacing == pytest.approx((0.7, 0.5, 2.0))


def _world_ras(ipp, iop, spacing, r, c):
    """The DICOM formula for one pixel, converted to RAS (independent of synthkit)."""
    ipp, iop = np.asarray(ipp, float), np.asarray(iop, float)
    lps = ipp + c * spacing[1] * iop[:3] + r * spacing[0] * iop[3:]
    return np.array([-lps[0], -lps[1], lps[2]])


def test_sagittal_series_sorted_by_normal_not_names(tmp_path):
    # Sagittal: rows run along +y (posterior), columns down (-z, inferior). Normal =
    # (0,1,0) x (0,0,-1) = (-1,0,0), so slices are ordered by decreasing LPS x: x = 10, 8, 6, 4.
    # LPS columns: i -> 0.9 * (0,1,0); j -> 1.0 * (0,0,-1); k -> (-2,0,0); origin (10,-50,60).
    # RAS (negate rows x, y): i -> (0,-0.9,0); j -> (0,0,-1); k -> (2,0,0); origin (-10,50,60).
    expected = np.array([
        [0.0, 0.0, 2.0, -10.0],
        [-0.9, 0.0, 0.0, 50.0],
        [0.0, -1.0, 0.0, 60.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
    iop = (0, 1, 0, 0, 0, -1)
    xs = [6.0, 10.0, 4.0, 8.0]  # written in a shuffled order
    px = np.stack([np.full((3, 4), int(x), dtype=np.int16) for x in xs])
    px[:, 1, 2] += 1000  # a marker at row 1, column 2 of every slice
    write_dicom_series(tmp_path / "sag", px, orientation=iop, positions=[(x, -50.0, 60.0) for x in xs],
                       pixel_spacing=(1.0, 0.9))
    vol = read_dicom_series(tmp_path / "sag")
    np.testing.assert_allclose(vol.affine, expected, atol=1e-6)
    assert [int(vol.data[0, 0, 0, k]) for k in range(4)] == [10, 8, 6, 4]
    # the marker voxel sits where the DICOM formula puts pixel (row 1, col 2) of slice x = 8
    i, j, k = (int(v) for v in np.argwhere(vol.data[0] == 1008)[0])
    assert (i, j, k) == (2, 1, 1)
    world = (vol.affine @ [i, j, k, 1])[:3]
    np.testing.assert_allclose(world, _world_ras((8.0, -50.0, 60.0), iop, (1.0, 0.9), r=1, c=2), atol=1e-6)


def test_oblique_series_affine(tmp_path):
    # Axial tilted 30 deg about x: row dir (1,0,0), column dir (0, cos30, sin30);
    # normal = (1,0,0) x (0,c,s) = (0,-s,c) = (0,-0.5,0.8660254). Slices 3 mm apart along it.
    # PixelSpacing (row 0.8, col 0.6), first slice at LPS (-20, 30, 40).
    # LPS: i -> (0.6,0,0); j -> 0.8*(0,c,s) = (0,0.6928203,0.4); k -> 3*(0,-0.5,0.8660254)
    #      = (0,-1.5,2.5980762). RAS: negate x and y rows; origin (20,-30,40).
    expected = np.array([
        [-0.6, 0.0, 0.0, 20.0],
        [0.0, -0.6928203, 1.5, -30.0],
        [0.0, 0.4, 2.5980762, 40.0],
        [0.0, 0.0, 0.0, 1.0],
    ])
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    iop = (1, 0, 0, 0, c, s)
    normal = np.array([0, -s, c])
    pos = [tuple(np.array([-20.0, 30.0, 40.0]) + 3.0 * k * normal) for k in range(5)]
    order = [3, 0, 4, 1, 2]
    write_dicom_series(tmp_path / "obl", dicom_pixels(5)[order], orientation=iop,
                       positions=[pos[k] for k in order], pixel_spacing=(0.8, 0.6))
    vol = read_dicom_series(tmp_path / "obl")
    np.testing.assert_allclose(vol.affine, expected, atol=1e-6)
    i, j, k = np.meshgrid(np.arange(5), np.arange(6), np.arange(5), indexing="ij")
    np.testing.assert_array_equal(vol.data[0], 100 * k + 10 * j + i)
    world = (vol.affine @ [4, 5, 2, 1])[:3]
    np.testing.assert_allclose(world, _world_ras(pos[2], iop, (0.8, 0.6), r=5, c=4), atol=1e-5)


def test_rescale_slope_intercept_applied(tmp_path):
    px = np.full((3, 4, 4), 100, dtype=np.int16)
    write_dicom_series(tmp_path / "ct", px, positions=axial_positions(3), slope=2.0,
                       intercept=-1024.0, modality="CT")
    vol = read_dicom_series(tmp_path / "ct")
    np.testing.assert_array_equal(vol.data, np.full((1, 4, 4, 3), 2 * 100 - 1024, dtype=np.float32))


def test_irregular_slice_spacing_is_refused(tmp_path):
    pos = [(0.0, 0.0, z) for z in (0.0, 2.0, 4.0, 7.0)]
    write_dicom_series(tmp_path / "irr", dicom_pixels(4), positions=pos)
    with pytest.raises(CohortError, match="irregular slice spacing"):
        read_dicom_series(tmp_path / "irr")


def test_two_series_in_one_folder_are_refused(tmp_path):
    write_dicom_series(tmp_path / "mix", dicom_pixels(2), positions=axial_positions(2), file_order=[0, 1])
    write_dicom_series(tmp_path / "mix", dicom_pixels(2), positions=axial_positions(2), file_order=[2, 3])
    with pytest.raises(CohortError, match="2 DICOM series"):
        read_dicom_series(tmp_path / "mix")


def test_duplicate_positions_are_refused(tmp_path):
    write_dicom_series(tmp_path / "dup", dicom_pixels(3), positions=[(0, 0, 0), (0, 0, 2), (0, 0, 2)])
    with pytest.raises(CohortError, match="duplicate slice positions"):
        read_dicom_series(tmp_path / "dup")


def test_truncated_dicom_file_is_named(tmp_path):
    paths = write_dicom_series(tmp_path / "cut", dicom_pixels(3), positions=axial_positions(3))
    raw = paths[1].read_bytes()
    paths[1].write_bytes(raw[: len(raw) - 25])
    with pytest.raises(CohortError) as err:
        read_dicom_series(tmp_path / "cut")
    assert paths[1].name in str(err.value)


def test_non_dicom_files_are_skipped_and_empty_folder_refused(tmp_path):
    write_dicom_series(tmp_path / "s", dicom_pixels(2), positions=axial_positions(2))
    (tmp_path / "s" / "notes.txt").write_text("not dicom")
    assert read_dicom_series(tmp_path / "s").spatial_shape == (5, 6, 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CohortError, match="no DICOM image files"):
        read_dicom_series(tmp_path / "empty")
