"""Label fidelity and tissue realism: the metric functions against known answers, and
``synthkit evaluate`` end to end on tiny phantom cohorts (controls flagged, segmenter cache,
a set without masks, label names from dataset.json)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synthkit.metrics.consistency import dice_per_label
from synthkit.metrics.label_fidelity import enclosing_label, label_contrast, label_names
from synthkit.metrics.tissue import (
    cjv,
    hf_share,
    log_spectral_distance,
    radial_power,
    spectral_slope,
    three_class_cjv,
    tissue_profile,
)

# ----------------------------------------------------------------------------- label contrast


def _head_with_tumour(size=32, head=100.0, tumour=130.0):
    """A ball head (label 1) with a 5^3 tumour (label 2); a +-10 checkerboard texture everywhere
    inside, so the head tissue has sd 10 (to within the checkerboard's odd voxel)."""
    g = np.indices((size,) * 3).astype(np.float64) - (size - 1) / 2
    mask = np.zeros((size,) * 3, np.int16)
    mask[(g**2).sum(0) < (0.4 * size) ** 2] = 1
    mask[4 + size // 2 : 9 + size // 2, 12:17, 12:17] = 2
    checker = 10.0 * (-1.0) ** np.indices(mask.shape).sum(0)
    img = np.where(mask == 2, tumour, np.where(mask == 1, head, 0.0)) + checker * (mask > 0)
    return img, mask


def test_label_contrast_has_the_known_value():
    img, mask = _head_with_tumour()
    assert enclosing_label(mask) == 1
    assert label_contrast(img, mask, 2) == pytest.approx(30.0 / 10.0, rel=0.02)
    # a tumour the image does not show scores 0; a darker one negative
    assert label_contrast(*_head_with_tumour(tumour=100.0), 2) == pytest.approx(0.0, abs=0.05)
    assert label_contrast(*_head_with_tumour(tumour=70.0), 2) == pytest.approx(-3.0, rel=0.02)
    # the scale is the head tissue's: a brighter tumour does not change it
    assert label_contrast(*_head_with_tumour(tumour=200.0), 2) == pytest.approx(10.0, rel=0.02)
    # the head is compared with the background around it (head brighter than air)
    assert label_contrast(img, mask, 1) == pytest.approx(100.0 / 10.0, rel=0.02)
    # unit-free: scanner scale and offset do not matter
    assert label_contrast(3.0 * img + 7.0, mask, 2) == pytest.approx(label_contrast(img, mask, 2), rel=1e-9)
    # absent labels, or a flat head (no scale): nothing to measure
    assert np.isnan(label_contrast(img, mask, 3))
    assert np.isnan(label_contrast(np.where(mask > 0, 100.0, 0.0), mask, 2))


def test_label_names_come_from_dataset_json():
    names = label_names({"labels": {"background": 0, "head": 1, "tumour": 2}}, [0, 1, 2, 4])
    assert names == {1: "head", 2: "tumour", 4: "label_4"}
    assert label_names(None, [2]) == {2: "label_2"}


def test_dice_per_label():
    t = np.zeros((4, 4, 4), int)
    t[:2] = 1
    p = np.zeros_like(t)
    p[:1] = 1
    d = dice_per_label(p, t, [1, 2])
    assert d[0] == pytest.approx(2 * 16 / (32 + 16)) and np.isnan(d[1])


# ----------------------------------------------------------------------------- tissue


def _power_law_noise(size: int, beta: float, seed: int = 0) -> np.ndarray:
    """Gaussian noise whose power spectrum falls as |k|^-beta."""
    rng = np.random.default_rng(seed)
    f = np.fft.fftfreq(size)
    k = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    k[0, 0, 0] = 1.0
    spec = np.fft.fftn(rng.standard_normal((size,) * 3)) * k ** (-beta / 2)
    return np.real(np.fft.ifftn(spec))


WHOLE = np.ones((64, 64, 64), np.int16)  # one label over the whole volume: all of it is tissue


@pytest.mark.parametrize("beta", [0.0, 1.0, 2.0])
def test_spectral_slope_of_a_volume_with_a_known_spectrum(beta):
    vol = _power_law_noise(64, beta)[None]
    prof = tissue_profile(vol + 10.0, WHOLE, patch=16, n_patches=16, seed=1)
    assert spectral_slope(prof.power[0], prof.modes) == pytest.approx(-beta, abs=0.3)


def test_blur_removes_high_frequency_power():
    from scipy.ndimage import gaussian_filter

    vol = _power_law_noise(64, 1.0) + 10.0
    sharp = tissue_profile(vol[None], WHOLE, patch=16, seed=0)
    blurred = tissue_profile(gaussian_filter(vol, 1.5)[None], WHOLE, patch=16, seed=0)
    assert hf_share(blurred, 0) < 0.2 * hf_share(sharp, 0)
    a, b = sharp.power[0] / sharp.modes, blurred.power[0] / blurred.modes
    assert log_spectral_distance(a, a) == 0.0 and log_spectral_distance(a, b) > 5.0


def test_radial_power_of_white_noise_is_flat():
    rng = np.random.default_rng(0)
    sums = np.zeros(8)
    for _ in range(20):
        s, modes = radial_power(rng.standard_normal((16, 16, 16)))
        sums += s
    per_mode = sums / modes
    assert per_mode[1:].std() / per_mode[1:].mean() < 0.1  # shell 1 loses some power to the window


def test_cjv_of_two_known_gaussian_classes():
    rng = np.random.default_rng(0)
    a, b = rng.normal(0.0, 1.0, 200_000), rng.normal(4.0, 1.0, 200_000)
    assert cjv(a, b) == pytest.approx(0.5, rel=0.01)
    # three well separated classes: the CJV of the two brightest
    dark = rng.normal(-20.0, 1.0, 100_000)
    mid, bright = rng.normal(10.0, 1.0, 100_000), rng.normal(20.0, 2.0, 100_000)
    assert three_class_cjv(np.concatenate([dark, mid, bright])) == pytest.approx(3.0 / 10.0, rel=0.03)


# ----------------------------------------------------------------------------- end to end


def _case(seed: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """A textured ellipsoid head (label 1) with a ring-enhancing tumour (label 2: bright rim, dark
    core, radius 3.5-4.5 voxels), faint noise outside; ``(1, D, H, W)`` image and ``(D, H, W)`` mask."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng([seed, 23])
    g = np.indices((size,) * 3).astype(np.float64)
    centre = (size - 1) / 2 + rng.uniform(-1, 1, 3)
    semi = size * rng.uniform(0.36, 0.42, 3)
    head = (((g - centre[:, None, None, None]) / semi[:, None, None, None]) ** 2).sum(0) < 1
    ball = centre + rng.uniform(-0.3, 0.3, 3) * semi
    r = np.sqrt(((g - ball[:, None, None, None]) ** 2).sum(0))
    radius = rng.uniform(3.5, 4.5)
    tumour = (r < radius) & head
    mask = np.where(tumour, 2, head).astype(np.int16)
    texture = 12 * gaussian_filter(rng.standard_normal((size,) * 3), 1.5) / 0.1 + 4 * rng.standard_normal((size,) * 3)
    img = np.where(head, 100 + texture, np.abs(rng.normal(0, 3, (size,) * 3)))
    img = np.where(tumour, np.where(r > radius - 1.5, 190.0, 55.0) + 4 * rng.standard_normal((size,) * 3), img)
    return img[None].astype(np.float32), mask


def _cohort(root, n=8, size=32, seed=0, masks=True, dataset_json=True):
    from synthkit.io import write_nnunet_dataset_json
    from synthkit.io.nifti import write_nifti

    affine = np.diag([1.5, 1.5, 1.5, 1.0])
    for i in range(n):
        img, msk = _case(seed + i, size)
        name = f"case_{i:03d}"
        write_nifti(root / "imagesTr" / f"{name}_0000.nii.gz", img, affine)
        if masks:
            write_nifti(root / "labelsTr" / f"{name}.nii.gz", msk, affine, is_label=True)
    if dataset_json:
        write_nnunet_dataset_json(root, ("T1",), {"background": 0, "head": 1, "tumour": 2}, n)
    return root


# random MedicalNet features: cheap at 32^3 (deepbet resizes every volume to 128^3); FID is not the subject here
FAST = ("--n-boot", "10", "--diversity-pairs", "3", "--seg-grid", "32", "--seg-steps", "400", "--features", "random",
        "--quiet")


@pytest.fixture(scope="module")
def controls_run(tmp_path_factory):
    """One evaluate with the four controls (the real set scored against itself too)."""
    import os

    from typer.testing import CliRunner

    from synthkit.cli.app import app

    tmp = tmp_path_factory.mktemp("fidelity")
    real = _cohort(tmp / "real")
    old = os.environ.get("SYNTHKIT_CACHE_DIR")
    os.environ["SYNTHKIT_CACHE_DIR"] = str(tmp / "cache")
    try:
        res = CliRunner().invoke(app, ["evaluate", str(real), str(real), "--controls", "--json", str(tmp / "out.json"),
                                       "--report", str(tmp / "rep"), *FAST], catch_exceptions=False)
    finally:
        if old is None:
            os.environ.pop("SYNTHKIT_CACHE_DIR")
        else:
            os.environ["SYNTHKIT_CACHE_DIR"] = old
    assert res.exit_code == 0, res.output
    return tmp, real, res, json.loads((tmp / "out.json").read_text())


def test_json_contract_and_label_names_in_the_table(controls_run):
    _, _, res, out = controls_run
    for entry in [out["real"], *out["sets"]]:
        for label in ("head", "tumour"):
            for metric in ("contrast", "dice"):
                d = entry["label_fidelity"][label][metric]
                assert set(d) >= {"value", "ci95", "std", "n"}, (entry["name"], label, metric)
        for metric in ("cjv", "spectrum", "intensity_w1"):
            assert set(entry["tissue"][metric]) >= {"value", "ci95"}
    text = " ".join(res.output.split())  # rich wraps long lines at the terminal width
    assert "tumour contrast" in text and "tumour Dice" in text
    assert "split-half reference" in text and "3D-FID missed it" in text


def test_segmenter_finds_the_real_tumour(controls_run):
    out = controls_run[3]
    assert out["real"]["label_fidelity"]["tumour"]["dice"]["value"] > 0.6  # the cross-fitted ceiling


def test_real_scored_as_itself_is_not_flagged(controls_run):
    from synthkit.metrics.tables import verdicts

    out = controls_run[3]
    v = {x["name"]: x for x in verdicts(out)}
    assert v["real"]["flagged"] == {}
    tum = out["sets"][0]["label_fidelity"]["tumour"]
    assert tum["contrast"]["ratio_to_real"] == pytest.approx(1.0)
    assert tum["contrast"]["paired_difference"]["value"] == pytest.approx(0.0)


def test_each_control_is_flagged_by_the_metric_built_for_it(controls_run):
    from synthkit.metrics.tables import verdicts

    out = controls_run[3]
    v = {x["name"]: x["flagged"] for x in verdicts(out)}
    erased = v["control: labels erased"]
    assert "tumour contrast" in erased and "tumour Dice" in erased
    assert "head contrast" not in erased and "head Dice" not in erased  # the head is untouched
    scrambled = v["control: texture scrambled"]
    assert {"spectrum (dB)", "intensity W1"} & set(scrambled)
    assert "spectrum (dB)" in v["control: blurred real"]
    assert "tumour contrast" in v["control: noise in mask"]
    sets = {s["name"]: s for s in out["sets"]}
    hf = lambda name: sets[name]["tissue"]["hf_share"]["value"]
    assert hf("control: blurred real") < 0.5 * hf("real")


def test_report_shows_fidelity(controls_run):
    tmp = controls_run[0]
    html = (tmp / "rep" / "index.html").read_text()
    assert "Label fidelity" in html and "Tissue realism" in html and "tumour" in html
    for png in ("label_contrast.png", "label_slices.png", "spectra.png", "tissue_histograms.png"):
        assert (tmp / "rep" / png).stat().st_size > 1000, png


def test_second_evaluate_reuses_the_cached_segmenter(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHKIT_CACHE_DIR", str(tmp_path / "cache"))
    real = _cohort(tmp_path / "real", n=6, size=24)
    fast = ("--n-boot", "10", "--diversity-pairs", "3", "--seg-grid", "24", "--seg-steps", "5", "--features", "random",
            "--quiet")
    res = cli("evaluate", real, real, "--json", tmp_path / "a.json", *fast)
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "cache" / "segmenters").glob("*/half*.safetensors"))) == 2
    # file names and the record carry no case name
    record = next((tmp_path / "cache" / "segmenters").glob("*/segmenter.json")).read_text()
    assert "case_" not in record

    from synthkit.metrics import consistency

    calls = []
    train = consistency.train_multilabel
    monkeypatch.setattr(consistency, "train_multilabel", lambda *a, **k: calls.append(1) or train(*a, **k))
    res = cli("evaluate", real, real, "--json", tmp_path / "b.json", *fast)
    assert res.exit_code == 0, res.output
    assert calls == []
    a, b = (json.loads((tmp_path / f"{x}.json").read_text()) for x in "ab")
    assert "label segmenter: from the cache" in " ".join(res.output.split())
    assert a["real"]["label_fidelity"] == b["real"]["label_fidelity"]
    # another segmenter budget is another model: both halves trained again
    res = cli("evaluate", real, real, "--n-boot", "10", "--seg-grid", "24", "--seg-steps", "6", "--features", "random",
              "--quiet")
    assert res.exit_code == 0 and len(calls) == 2


def test_set_without_masks_skips_label_fidelity_only(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHKIT_CACHE_DIR", str(tmp_path / "cache"))
    real = _cohort(tmp_path / "real", n=6, size=32)
    plain = tmp_path / "plain"
    from synthkit.io.nifti import write_nifti

    for i in range(6):
        write_nifti(plain / f"vol_{i}.nii.gz", _case(50 + i, 32)[0], np.diag([1.5, 1.5, 1.5, 1.0]))
    res = cli("evaluate", real, plain, "--json", tmp_path / "o.json", "--seg-steps", "5", "--seg-grid", "32",
              "--n-boot", "10", "--diversity-pairs", "3", "--features", "random", "--quiet")
    assert res.exit_code == 0, res.output
    out = json.loads((tmp_path / "o.json").read_text())
    s = out["sets"][0]
    assert s["label_fidelity"] is None and "no masks" in s["label_fidelity_skipped"]
    assert res.output.count("label fidelity skipped for plain") == 1
    assert s["tissue"]["intensity_w1"]["value"] is not None and s["fid"]["value"] is not None


def test_bad_segmenter_option_is_one_line(cli, tmp_path):
    real = _cohort(tmp_path / "real", n=4, size=16)
    res = cli("evaluate", real, real, "--segmenter", "magic", "--features", "random", "--quiet")
    assert res.exit_code == 2 and "--segmenter must be" in res.output and "Traceback" not in res.output
