"""Sampling: the CLI chain demo cohort -> train -> sample, mask grids, determinism, resume, API."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from phantoms import phantom
from test_training_helpers import write_phantom_cohort

import synthkit
from synthkit.errors import CheckpointError
from synthkit.io import discover_cohort, read_nifti, write_nifti
from synthkit.jobs.sample import sample_masks
from synthkit.pipeline import seed_for


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny run trained through the CLI on the demo cohort (module-scoped: trained once)."""
    from typer.testing import CliRunner

    from synthkit.cli.app import app

    tmp = tmp_path_factory.mktemp("chain")
    runner = CliRunner()
    r = runner.invoke(app, ["cohort", "demo", str(tmp / "demo"), "--n", "2", "--size", "16", "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", str(tmp / "demo"), "--out", str(tmp / "run"), "--preset", "tiny",
                            "--shape", "16", "16", "16", "--timesteps", "10", "--steps", "3", "--lr", "1e-3",
                            "--checkpoint-every", "2", "--quiet"])
    assert r.exit_code == 0, r.output
    return tmp / "run"


def _odd_grid_masks(folder: Path) -> Path:
    """Masks on grids unlike the training grid: anisotropic, oblique, non-cubic."""
    _, m = phantom(size=16, seed=4)
    a = m.data[0][:, 1:15, 2:14]  # 16 x 14 x 12
    aff = np.array([[0.0, -2.0, 0.0, 30.0], [1.2, 0.0, 0.0, -10.0], [0.0, 0.0, 3.0, 5.0], [0, 0, 0, 1]])
    theta = np.deg2rad(12)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0, 0], [np.sin(theta), np.cos(theta), 0, 0], [0, 0, 1, 0],
                    [0, 0, 0, 1]])
    write_nifti(folder / "oblique.nii.gz", a, rot @ aff, is_label=True)
    _, m2 = phantom(size=20, seed=6)
    write_nifti(folder / "big.nii.gz", m2.data, m2.affine, is_label=True)
    return folder


def test_cli_chain_writes_volumes_on_each_masks_grid(trained, tmp_path, cli):
    masks = _odd_grid_masks(tmp_path / "masks")
    out = tmp_path / "synth"
    r = cli("sample", masks, "--model", trained, "--out", out, "--sampler", "ddim", "--steps", "2", "--per-mask", "2", "--quiet")
    assert r.exit_code == 0, r.output
    for case in ("oblique", "big"):
        src = nib.load(masks / f"{case}.nii.gz")
        for k in (0, 1):
            img = nib.load(out / "imagesTr" / f"{case}_s{k}_0000.nii.gz")
            lab = nib.load(out / "labelsTr" / f"{case}_s{k}.nii.gz")
            assert img.shape == src.shape and lab.shape == src.shape
            np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
            np.testing.assert_allclose(lab.affine, src.affine, atol=1e-5)
            assert np.array_equal(np.asarray(lab.dataobj), np.asarray(src.dataobj))
            data = np.asarray(img.dataobj)
            assert data.dtype == np.float32 and np.isfinite(data).all()
            intensity = json.loads((trained / "intensity.json").read_text())
            assert intensity["lo"][0] - 1e-4 <= data.min() and data.max() <= intensity["hi"][0] + 1e-4
            assert img.header["descrip"].tobytes().strip(b"\0") == b""
    # the output is itself a cohort
    synth = discover_cohort(out)
    assert len(synth.cases) == 4 and synth.channel_names == ("T1",)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["sampler"] == "ddim" and manifest["settings"]["steps"] == 2
    item = next(e for e in manifest["items"] if e["case"] == "big" and e["k"] == 1)
    assert item["seed"] == seed_for(0, "big", 1) and item["background"] is True


def test_same_seed_bit_identical_alone_or_in_a_set_and_close_at_any_batch(trained, tmp_path):
    gen = synthkit.load(trained)
    masks = _odd_grid_masks(tmp_path / "masks")
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "big.nii.gz").write_bytes((masks / "big.nii.gz").read_bytes())
    kw = {"per_mask": 2, "sampler": "ddim", "steps": 2, "seed": 7}
    sample_masks(gen, masks, tmp_path / "a", batch_size=1, **kw)
    sample_masks(gen, masks, tmp_path / "b", batch_size=3, **kw)
    sample_masks(gen, alone, tmp_path / "c", batch_size=1, **kw)
    intensity = json.loads((trained / "intensity.json").read_text())
    span = intensity["hi"][0] - intensity["lo"][0]
    for k in (0, 1):
        name = f"imagesTr/big_s{k}_0000.nii.gz"
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "c" / name).read_bytes()  # alone or in a set: bit for bit at batch size 1
        # batched with other masks' volumes: the same volume up to the batched call's rounding
        np.testing.assert_allclose(read_nifti(tmp_path / "b" / name).data, read_nifti(tmp_path / "a" / name).data,
                                   rtol=0, atol=1e-4 * span)
    s0 = (tmp_path / "a/imagesTr/big_s0_0000.nii.gz").read_bytes()
    assert s0 != (tmp_path / "a/imagesTr/big_s1_0000.nii.gz").read_bytes()  # k gives a new sample
    sample_masks(gen, masks, tmp_path / "d", per_mask=1, sampler="ddim", steps=2, seed=8)
    assert s0 != (tmp_path / "d/imagesTr/big_s0_0000.nii.gz").read_bytes()  # the seed matters
    # the Python API reproduces a file from its manifest seed
    manifest = json.loads((tmp_path / "a/manifest.json").read_text())
    entry = next(e for e in manifest["items"] if e["case"] == "big" and e["k"] == 0)
    vol = gen.sample(read_nifti(masks / "big.nii.gz", is_label=True), seed=entry["seed"], sampler="ddim", steps=2)
    assert np.array_equal(vol.data[0], read_nifti(tmp_path / "a" / entry["images"][0]).data[0])


def test_sampling_resumes_and_skips_finished_volumes(trained, tmp_path, monkeypatch):
    gen = synthkit.load(trained)
    masks = _odd_grid_masks(tmp_path / "masks")
    out = tmp_path / "out"
    sample_masks(gen, masks, out, per_mask=2, sampler="ddim", steps=2, batch_size=1)
    before = (out / "imagesTr/big_s1_0000.nii.gz").read_bytes()
    (out / "imagesTr/big_s1_0000.nii.gz").unlink()
    calls = []
    real = gen.sample_batch
    monkeypatch.setattr(gen, "sample_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    manifest = sample_masks(gen, masks, out, per_mask=2, sampler="ddim", steps=2, batch_size=1)
    assert len(calls) == 1 and len(manifest["items"]) == 4
    assert (out / "imagesTr/big_s1_0000.nii.gz").read_bytes() == before
    # other settings: nothing matches, everything is generated again
    calls.clear()
    sample_masks(gen, masks, out, per_mask=2, sampler="ddim", steps=3, batch_size=1)
    assert len(calls) == 4
    assert not list(out.glob(".manifest.rank*"))


def test_unusable_mask_is_reported_not_fatal(trained, tmp_path, cli):
    masks = _odd_grid_masks(tmp_path / "masks")
    _, m = phantom(size=16, seed=1)
    write_nifti(masks / "weird.nii.gz", m.data * 3, m.affine, is_label=True)  # labels 3, 6: unknown
    out = tmp_path / "out"
    r = cli("sample", masks, "--model", trained, "--out", out, "--sampler", "ddim", "--steps", "2", "--quiet")
    assert r.exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [s["case"] for s in manifest["skipped"]] == ["weird"]
    assert len(manifest["items"]) == 2
    r = cli("sample", masks, "--model", trained, "--out", tmp_path / "strict", "--sampler", "ddim", "--steps", "2",
            "--strict", "--quiet")
    assert r.exit_code != 0


def test_api_sample_on_array_and_background_hold(trained):
    gen = synthkit.load(trained)
    _, m = phantom(size=16, seed=2)
    vol = gen.sample(m, seed=0, sampler="ddim", steps=2)
    assert vol.data.shape == (1, 16, 16, 16) and np.array_equal(vol.affine, m.affine)
    lo = json.loads((trained / "intensity.json").read_text())["lo"][0]
    outside = m.data[0] == 0
    assert np.allclose(vol.data[0][outside], lo, atol=1e-4)  # held at background outside the head
    free = gen.sample(m, seed=0, sampler="ddim", steps=2, background=False)
    assert not np.allclose(free.data[0][outside], lo, atol=1e-4)
    same = gen.sample(m.data[0], affine=m.affine, seed=0, sampler="ddim", steps=2)
    assert np.array_equal(same.data, vol.data)


def test_bad_run_folders_are_refused(tmp_path, trained, cli):
    with pytest.raises(CheckpointError, match="no such run"):
        synthkit.load(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="config.json"):
        synthkit.load(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "config.json").write_bytes((trained / "config.json").read_bytes())
    (bad / "model.safetensors").write_bytes(b"\x80\x04not really")
    with pytest.raises(CheckpointError, match="refusing"):
        synthkit.load(bad)
    r = cli("sample", tmp_path, "--model", bad, "--out", tmp_path / "o", "--quiet")
    assert r.exit_code == 1 and "refusing" in r.output and "Traceback" not in r.output


def test_masks_can_come_from_a_cohort(trained, tmp_path):
    cohort = write_phantom_cohort(tmp_path / "coh", n=2)
    m = sample_masks(synthkit.load(trained), cohort, tmp_path / "out", sampler="ddim", steps=2)
    assert [e["case"] for e in m["items"]] == ["case_000", "case_001"]
