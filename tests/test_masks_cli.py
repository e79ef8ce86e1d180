"""`synthkit masks perturb` / `replay` end to end on tiny mask folders written with nibabel."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest


def ball(shape, center, radius):
    g = np.indices(shape, dtype=float)
    return ((g - np.asarray(center, float)[:, None, None, None]) ** 2).sum(0) < radius**2


def write_mask(path, n=20, offset=(2, -1, 1), tumour_r=3.0, spacing=(1.0, 1.0, 1.0)):
    m = np.zeros((n, n, n), np.uint8)
    c = (np.array([n, n, n]) - 1) / 2
    m[ball(m.shape, c, n * 0.45)] = 1
    if tumour_r:
        m[ball(m.shape, c + np.asarray(offset), tumour_r)] = 2
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 3.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(m, affine), str(path))
    return m, affine


@pytest.fixture
def folder(tmp_path):
    """Plain folder of 3 masks (different sizes/spacings) plus one corrupt file."""
    d = tmp_path / "masks"
    write_mask(d / "case_a.nii.gz", 20)
    write_mask(d / "case_b.nii.gz", 16, offset=(0, 1, 0), tumour_r=2.5, spacing=(1.2, 1.2, 1.5))
    write_mask(d / "case_c.nii.gz", 24, offset=(-3, 2, 0))
    (d / "broken.nii.gz").write_bytes(b"this is not a nifti file")
    return d


def load(path):
    img = nib.load(str(path))
    return np.asarray(img.dataobj), img.affine


def test_perturb_default_reports_bad_file_and_writes_the_others(cli, folder, tmp_path):
    out = tmp_path / "out"
    r = cli("masks", "perturb", folder, "--out", out, "--n-per-mask", 2, "--seed", 5, "--quiet")
    assert r.exit_code == 1
    assert "broken" in r.stderr and "Traceback" not in r.output
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(f"case_{c}_{k}.{e}" for c in "abc" for k in (0, 1) for e in ("nii.gz", "json"))
    for c in "abc":
        src, aff = load(folder / f"case_{c}.nii.gz")
        for k in (0, 1):
            got, got_aff = load(out / f"case_{c}_{k}.nii.gz")
            assert got.shape == src.shape and np.allclose(got_aff, aff)
            assert set(np.unique(got)) <= {0, 1, 2}
            assert not np.any((got == 2) & (src == 0))
            assert np.array_equal(got == 0, src == 0)
            side = json.loads((out / f"case_{c}_{k}.json").read_text())
            assert side["case"] == f"case_{c}" and side["index"] == k and side["seed"] == 5
            assert [o["op"] for o in side["ops"]] == ["move"]
            assert str(folder) not in json.dumps(side)  # no source path in the sidecar
    a0, _ = load(out / "case_a_0.nii.gz")
    a1, _ = load(out / "case_a_1.nii.gz")
    assert not np.array_equal(a0, a1)


def test_same_seed_same_bytes_other_seed_differs(cli, folder, tmp_path):
    for name, seed in (("x", 1), ("y", 1), ("z", 2)):
        cli("masks", "perturb", folder, "--out", tmp_path / name, "--seed", seed, "-q",
            "--ops", "move:elastic=1", "--ops", "deform")
    for c in "abc":
        x = (tmp_path / "x" / f"case_{c}_0.nii.gz").read_bytes()
        assert x == (tmp_path / "y" / f"case_{c}_0.nii.gz").read_bytes()
        assert x != (tmp_path / "z" / f"case_{c}_0.nii.gz").read_bytes()


def test_replay_reproduces_every_output(cli, folder, tmp_path):
    out = tmp_path / "out"
    cli("masks", "perturb", folder, "--out", out, "-q", "--ops", "transplant+place:radius_mm=2")
    for side in sorted(out.glob("*.json")):
        r = cli("masks", "replay", side, "--masks", folder)
        assert r.exit_code == 0, r.output
        assert "identical" in r.output
    side = out / "case_a_0.json"
    r = cli("masks", "replay", side, "--masks", folder, "--out", tmp_path / "again.nii.gz")
    assert r.exit_code == 0
    assert np.array_equal(load(tmp_path / "again.nii.gz")[0], load(out / "case_a_0.nii.gz")[0])
    # tampered output: replay says so
    m, aff = load(out / "case_a_0.nii.gz")
    m = m.copy()
    m[0, 0, 0] = 1
    nib.save(nib.Nifti1Image(m, aff), str(out / "case_a_0.nii.gz"))
    r = cli("masks", "replay", side, "--masks", folder)
    assert r.exit_code == 1 and "differs" in r.stderr


def test_strict_stops_at_the_bad_file(cli, folder, tmp_path):
    r = cli("masks", "perturb", folder, "--out", tmp_path / "o", "--strict", "-q")
    assert r.exit_code == 1
    assert "broken" in r.stderr and r.stderr.count("synthkit: error") == 1


def test_nnunet_cohort_with_label_names_and_remove(cli, tmp_path):
    root = tmp_path / "Dataset001"
    for i in range(2):
        write_mask(root / "labelsTr" / f"c{i}.nii.gz", 16, tumour_r=2.5)
        write_mask(root / "imagesTr" / f"c{i}_0000.nii.gz", 16)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1"}, "labels": {"background": 0, "brain": 1, "tumour": 2},
        "numTraining": 2, "file_ending": ".nii.gz"}))
    out = tmp_path / "out"
    r = cli("masks", "perturb", root, "--out", out, "--ops", "remove", "--label", "tumour",
            "--head-label", "brain", "-q")
    assert r.exit_code == 0, r.output
    for i in range(2):
        got, _ = load(out / f"c{i}_0.nii.gz")
        src, _ = load(root / "labelsTr" / f"c{i}.nii.gz")
        assert set(np.unique(got)) == {0, 1} and np.array_equal(got != 0, src != 0)


def test_usage_errors_are_one_line(cli, folder, tmp_path):
    r = cli("masks", "perturb", folder, "--out", tmp_path / "o", "--ops", "teleport")
    assert r.exit_code == 2 and "unknown mask operation 'teleport'" in r.stderr
    r = cli("masks", "perturb", folder, "--out", tmp_path / "o", "--ops", "move:speed=3")
    assert r.exit_code == 2 and "no option 'speed'" in r.stderr
    r = cli("masks", "perturb", folder, "--out", tmp_path / "o", "--label", "cyst")
    assert r.exit_code == 2 and "cyst" in r.stderr
    r = cli("masks", "perturb", tmp_path / "nowhere", "--out", tmp_path / "o")
    assert r.exit_code == 2
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_case_without_tumour_fails_alone(cli, tmp_path):
    d = tmp_path / "m"
    write_mask(d / "sick.nii.gz", 16, tumour_r=2.5)
    write_mask(d / "healthy.nii.gz", 16, tumour_r=0)
    out = tmp_path / "out"
    r = cli("masks", "perturb", d, "--out", out, "--label", "2", "-q")
    assert r.exit_code == 1 and "healthy" in r.stderr and "no tumour" in r.stderr
    assert (out / "sick_0.nii.gz").is_file()
    r = cli("masks", "perturb", d, "--out", tmp_path / "o2", "--label", "2", "--ops", "place:radius_mm=2", "-q")
    assert r.exit_code == 0, r.stderr
