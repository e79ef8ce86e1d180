"""synthkit.viz: montage PNGs with outlined masks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from phantoms import phantom
from PIL import Image

from synthkit.viz import focus_point, montage

RED = np.array([0xFF, 0x3B, 0x30])  # colour of the second label's contour


def _rgb(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _has_colour(rgb: np.ndarray, colour: np.ndarray, tol: int = 40) -> bool:
    return bool((np.abs(rgb - colour).sum(-1) < tol).any())


def test_montage_rows_and_contours(tmp_path):
    img, mask = phantom(size=16, seed=0)
    vols = [img.data[0], torch.from_numpy(img.data)]  # (D, H, W) numpy and (C, D, H, W) torch
    out = montage(vols, [mask.data[0], None], ["real", "synthetic"], tmp_path / "m.png")
    assert out == tmp_path / "m.png"
    one = montage(vols[:1], [mask.data[0]], ["real"], tmp_path / "one.png")
    two, single = _rgb(out), _rgb(one)
    assert two.shape[1] == single.shape[1] and two.shape[0] == 2 * single.shape[0]
    assert _has_colour(single, RED)  # tumour (label 2) outlined
    bare = montage(vols[:1], None, None, tmp_path / "bare.png")
    assert not _has_colour(_rgb(bare), RED)
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "bare.png",
        "m.png",
        "one.png",
    ]  # no temp files left


def test_focus_point():
    lab = np.zeros((10, 10, 10), np.int16)
    lab[1:9, 1:9, 1:9] = 1
    lab[6:9, 2:5, 4:7] = 2
    lab[1:3, 5:8, 1:4] = 3
    assert focus_point(lab, lab.shape) == (5, 4, 4)  # labels 2 and 3 together (1 is the largest)
    assert focus_point(lab, lab.shape, focus_label=2) == (7, 3, 5)
    assert focus_point(None, lab.shape) == (5, 5, 5)
    assert focus_point(np.zeros_like(lab), lab.shape) == (5, 5, 5)


def test_bad_shapes(tmp_path):
    with pytest.raises(ValueError):
        montage([np.zeros((4, 4))], None, None, tmp_path / "x.png")
    with pytest.raises(ValueError):
        montage([np.zeros((4, 4, 4))], [np.zeros((4, 4, 5))], ["a"], tmp_path / "x.png")
    with pytest.raises(ValueError):
        montage([np.zeros((4, 4, 4))], None, ["a", "b"], tmp_path / "x.png")
    assert not list(tmp_path.iterdir())
