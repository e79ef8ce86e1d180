"""Latent Med-DDPM, the inference side: a tiny autoencoder and a tiny latent run trained through
the CLI, then load by kind, `synthkit sample` on each mask's own grid, determinism, batching,
the background hold, a tampered autoencoder refused, and augment / anonymize on a latent run.

The training side (pooled masks, cached latents, resume, kill -9) is tests/test_autoencoder_latent.py."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from phantoms import phantom
from test_training_helpers import write_phantom_cohort

from synthkit.errors import CheckpointError
from synthkit.io import read_nifti, write_nifti
from synthkit.io.hashing import file_sha256


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """A phantom cohort (4 cases, head 1, tumour 2, 16^3), a tiny autoencoder and a tiny latent run on it,
    both trained with synthkit's own commands (module-scoped: trained once)."""
    from typer.testing import CliRunner

    from synthkit.cli.app import app

    root = tmp_path_factory.mktemp("latent")
    cohort = write_phantom_cohort(root / "cohort", n=4)  # anonymize's memorization check needs 4
    runner = CliRunner()
    r = runner.invoke(app, ["autoencoder", "train", str(cohort), "--out", str(root / "ae"), "--preset", "tiny",
                            "--shape", "16", "16", "16", "--crop", "8", "--steps", "3", "--batch-size", "2",
                            "--checkpoint-every", "3", "--preview-every", "0", "--seed", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", str(cohort), "--out", str(root / "run"), "--autoencoder", str(root / "ae"),
                            "--preset", "tiny", "--timesteps", "10", "--steps", "3", "--lr", "1e-3",
                            "--checkpoint-every", "3", "--quiet"])
    assert r.exit_code == 0, r.output
    return {"root": root, "cohort": cohort, "ae": root / "ae", "run": root / "run"}


def _odd_grid_masks(folder: Path) -> Path:
    """Masks unlike the 16^3 training grid: oblique and anisotropic 16 x 14 x 12, and 20^3."""
    _, m = phantom(size=16, seed=4)
    aff = np.array([[0.0, -2.0, 0.0, 30.0], [1.2, 0.0, 0.0, -10.0], [0.0, 0.0, 3.0, 5.0], [0, 0, 0, 1]])
    theta = np.deg2rad(12)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0, 0], [np.sin(theta), np.cos(theta), 0, 0], [0, 0, 1, 0],
                    [0, 0, 0, 1]])
    write_nifti(folder / "oblique.nii.gz", m.data[0][:, 1:15, 2:14], rot @ aff, is_label=True)
    _, m2 = phantom(size=20, seed=6)
    write_nifti(folder / "big.nii.gz", m2.data, m2.affine, is_label=True)
    return folder


def _span(run: Path) -> tuple[float, float]:
    i = json.loads((run / "intensity.json").read_text())
    return float(i["lo"][0]), float(i["hi"][0])


def test_load_dispatches_to_the_latent_pipeline(world):
    import synthkit
    from synthkit.pipeline import LatentPipeline, known_kinds

    pipe = synthkit.load(world["run"])
    assert type(pipe) is LatentPipeline and pipe.kind == "latent" and "latent" in known_kinds()
    assert pipe.image_channels == 1 and pipe.latent_channels == 4 and pipe.factor == 4
    assert pipe.scale_factor == json.loads((world["ae"] / "config.json").read_text())["scale_factor"] > 0
    assert pipe.autoencoder_sha256 == file_sha256(world["ae"] / "model.safetensors")
    assert pipe.weights_sha256 == file_sha256(world["run"] / "model.safetensors")
    for net in (pipe.model, pipe.autoencoder):
        assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert pipe.check_sampling("dpmpp", 3, 0.0) == ("dpmpp", 3) and pipe.check_sampling(None, None, 0.0) == ("ddpm", 10)
    # prepare() gives the image-grid cond; the denoiser sees its average pooling, as in training
    from synthkit.networks.autoencoder import pool_cond
    from synthkit.training import autoencoder_latent

    assert autoencoder_latent.pool_cond is pool_cond  # one function for training and sampling
    _, m = phantom(size=16, seed=0)
    prep = pipe.prepare(m)
    assert prep.cond.shape == (2, 16, 16, 16) and prep.has_head
    seen: list[torch.Tensor] = []
    pipe.model.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach().clone()))
    x = pipe.sample_batch(prep.cond[None], [3], sampler="ddim", steps=2)
    assert x.shape == (1, 1, 16, 16, 16) and x.dtype == torch.float32 and -1 <= x.min() and x.max() <= 1
    block_mean = prep.cond.reshape(2, 4, 4, 4, 4, 4, 4).mean(dim=(2, 4, 6))  # each 4^3 block's label fractions
    assert len(seen) == 2 and seen[0].shape == (1, 4 + 2, 4, 4, 4)
    torch.testing.assert_close(seen[0][0, 4:], block_mean, rtol=0, atol=1e-6)
    assert float(block_mean[1].sum()) > 0 and ((block_mean > 0) & (block_mean < 1)).any()  # partial volumes kept


def test_cli_sample_lands_on_each_masks_own_grid(world, tmp_path, cli):
    masks = _odd_grid_masks(tmp_path / "masks")
    out = tmp_path / "synth"
    r = cli("sample", masks, "--model", world["run"], "--out", out, "--sampler", "dpmpp", "--steps", "3", "--per-mask", "2",
            "--seed", "2", "--quiet")
    assert r.exit_code == 0, r.output
    lo, hi = _span(world["run"])
    for case in ("oblique", "big"):
        src = nib.load(masks / f"{case}.nii.gz")
        for k in (0, 1):
            img = nib.load(out / "imagesTr" / f"{case}_s{k}_0000.nii.gz")
            lab = nib.load(out / "labelsTr" / f"{case}_s{k}.nii.gz")
            assert img.shape == src.shape == lab.shape
            np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
            assert np.array_equal(np.asarray(lab.dataobj), np.asarray(src.dataobj))
            data = np.asarray(img.dataobj)
            assert data.dtype == np.float32 and np.isfinite(data).all()
            assert lo - 1e-4 <= data.min() and data.max() <= hi + 1e-4 and data.std() > 0.01 * (hi - lo)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["sampler"] == "dpmpp" and manifest["settings"]["steps"] == 3
    assert len(manifest["items"]) == 4


def test_same_seed_same_bytes_and_batch_2_close_to_batch_1(world, tmp_path, cli):
    masks = _odd_grid_masks(tmp_path / "masks")
    def run(name: str, batch: str, seed: str = "7") -> None:
        r = cli("sample", masks, "--model", world["run"], "--sampler", "ddim", "--steps", "2", "--seed", seed, "--quiet",
                "--out", tmp_path / name, "--batch-size", batch)
        assert r.exit_code == 0, r.output

    for name, b in (("a", "1"), ("again", "1"), ("b2", "2")):
        run(name, b)
    lo, hi = _span(world["run"])
    for case in ("oblique", "big"):
        name = f"imagesTr/{case}_s0_0000.nii.gz"
        a = (tmp_path / "a" / name).read_bytes()
        assert a == (tmp_path / "again" / name).read_bytes()  # same seed -> same bytes
        np.testing.assert_allclose(read_nifti(tmp_path / "b2" / name).data, read_nifti(tmp_path / "a" / name).data,
                                   rtol=0, atol=1e-4 * (hi - lo))
    run("other", "1", seed="8")
    assert (tmp_path / "other/imagesTr/big_s0_0000.nii.gz").read_bytes() != \
        (tmp_path / "a/imagesTr/big_s0_0000.nii.gz").read_bytes()  # the seed matters
    # the Python API reproduces a file from its manifest seed
    import synthkit

    entry = next(e for e in json.loads((tmp_path / "a/manifest.json").read_text())["items"] if e["case"] == "big")
    vol = synthkit.load(world["run"]).sample(masks / "big.nii.gz", seed=entry["seed"], sampler="ddim", steps=2)
    assert np.array_equal(vol.data[0], read_nifti(tmp_path / "a" / entry["images"][0]).data[0])


def test_background_held_outside_the_head_in_image_space(world):
    import synthkit

    pipe = synthkit.load(world["run"])
    lo, _ = _span(world["run"])
    _, m = phantom(size=16, seed=2)
    outside = m.data[0] == 0
    vol = pipe.sample(m, seed=0, sampler="ddim", steps=2)  # default: on, the mask has a head label
    assert vol.data.shape == (1, 16, 16, 16) and np.array_equal(vol.affine, m.affine)
    assert outside.any() and np.allclose(vol.data[0][outside], lo, atol=1e-4)
    assert not np.allclose(vol.data[0][~outside], lo, atol=1e-4)
    free = pipe.sample(m, seed=0, sampler="ddim", steps=2, background=False)
    assert not np.allclose(free.data[0][outside], lo, atol=1e-4)
    np.testing.assert_array_equal(free.data[0][~outside], vol.data[0][~outside])  # held after decoding only


def test_decoding_undoes_the_runs_per_channel_standardisation(world, tmp_path):
    import synthkit

    pipe = synthkit.load(world["run"])
    shift, scale = pipe.config.latent_shift, pipe.config.latent_scale
    assert pipe.config.latent_norm == "channel" and len(shift) == len(scale) == pipe.latent_channels
    z = torch.randn(1, pipe.latent_channels, 4, 4, 4, generator=torch.Generator().manual_seed(1))
    raw = z * torch.tensor(scale).view(1, -1, 1, 1, 1) + torch.tensor(shift).view(1, -1, 1, 1, 1)
    with torch.no_grad():
        want = pipe.autoencoder.decode(raw / pipe.scale_factor).clamp(-1, 1)
    torch.testing.assert_close(pipe.decode(z), want, rtol=1e-5, atol=1e-6)
    # a "channel" run without its statistics is refused at load, in one line naming config.json
    run = tmp_path / "run"
    shutil.copytree(world["run"], run, ignore=shutil.ignore_patterns("cache", "checkpoint"))
    cfg = json.loads((run / "config.json").read_text())
    cfg["latent_scale"] = None
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="latent_shift/latent_scale"):
        synthkit.load(run)


def test_tampered_or_mismatched_autoencoder_is_refused_in_one_line(world, tmp_path, cli):
    import synthkit

    run = tmp_path / "run"
    shutil.copytree(world["run"], run, ignore=shutil.ignore_patterns("cache", "checkpoint"))
    weights = run / "autoencoder" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one bit of one weight: still a valid safetensors file
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="refusing the autoencoder weights"):
        synthkit.load(run)
    masks = _odd_grid_masks(tmp_path / "masks")
    r = cli("sample", masks, "--model", run, "--out", tmp_path / "o", "--quiet")
    assert r.exit_code == 1 and "refusing the autoencoder weights" in r.output and "Traceback" not in r.output
    assert len(r.output.strip().splitlines()) == 1 and str(weights) in r.output
    assert not (tmp_path / "o" / "imagesTr").exists()
    # the autoencoder's config copy must be the one the run's config.json records
    shutil.copyfile(world["run"] / "autoencoder" / "model.safetensors", weights)
    synthkit.load(run)  # restored: loads again
    cfg = json.loads((run / "autoencoder" / "config.json").read_text())
    cfg["scale_factor"] *= 2
    (run / "autoencoder" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="differs from the autoencoder in the run's config.json"):
        synthkit.load(run)
    shutil.rmtree(run / "autoencoder")
    with pytest.raises(CheckpointError, match="no autoencoder weights"):
        synthkit.load(run)
    run_cfg = json.loads((run / "config.json").read_text())
    run_cfg["autoencoder"] = None
    (run / "config.json").write_text(json.dumps(run_cfg))
    with pytest.raises(CheckpointError, match="must record its autoencoder"):
        synthkit.load(run)


def test_augment_accepts_a_latent_run(world, tmp_path, cli):
    from synthkit.augment.dataset import validate_nnunet_dataset

    out = tmp_path / "aug"
    r = cli("augment", world["cohort"], "--model", world["run"], "--n", "2", "--sampler", "ddim", "--steps", "2",
            "--seed", "1", "--device", "cpu", "-q", "--out", out)
    assert r.exit_code == 0, r.output
    assert validate_nnunet_dataset(out) == []
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 2
    man = json.loads((out / "augment.json").read_text())
    assert man["model"]["weights_sha256"] == file_sha256(world["run"] / "model.safetensors")
    for img in sorted((out / "imagesTr").glob("*.nii.gz")):
        lab = nib.load(out / "labelsTr" / (img.name[: -len("_0000.nii.gz")] + ".nii.gz"))
        vol = nib.load(img)
        assert vol.shape == lab.shape and np.isfinite(np.asarray(vol.dataobj)).all()
        np.testing.assert_allclose(vol.affine, lab.affine, atol=1e-5)


def test_anonymize_accepts_a_latent_run(world, tmp_path, cli):
    out = tmp_path / "anon"
    r = cli("anonymize", world["cohort"], "--model", world["run"], "--out", out, "--no-privacy-gate", "--no-features", "--shape", "16",
            "--sampler", "ddim", "--steps", "2", "--seed", "5", "--quiet")
    assert r.exit_code == 0, r.output
    images = sorted((out / "imagesTr").glob("*.nii.gz"))
    assert len(images) == 4 and all(p.name.startswith("syn_") for p in images)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"]["weights_sha256"] == file_sha256(world["run"] / "model.safetensors")
    assert all(c["status"] == "ok" for c in manifest["cases"])
    for p in images:
        data = np.asarray(nib.load(p).dataobj)
        assert np.isfinite(data).all() and data.std() > 0


def test_sampling_a_latent_run_resumes_from_its_manifest(world, tmp_path, monkeypatch):
    import synthkit
    from synthkit.jobs.sample import sample_masks

    pipe = synthkit.load(world["run"])
    masks = _odd_grid_masks(tmp_path / "masks")
    out = tmp_path / "out"
    sample_masks(pipe, masks, out, per_mask=2, sampler="ddim", steps=2, batch_size=1)
    before = (out / "imagesTr/big_s1_0000.nii.gz").read_bytes()
    (out / "imagesTr/big_s1_0000.nii.gz").unlink()
    calls: list[int] = []
    real = pipe.sample_batch
    monkeypatch.setattr(pipe, "sample_batch", lambda *a, **k: calls.append(1) or real(*a, **k))
    manifest = sample_masks(pipe, masks, out, per_mask=2, sampler="ddim", steps=2, batch_size=1)
    assert len(calls) == 1 and len(manifest["items"]) == 4
    assert (out / "imagesTr/big_s1_0000.nii.gz").read_bytes() == before


def test_existing_latent_run_needs_resume_then_continues_and_samples(world, tmp_path, cli):
    """As tests/test_training.py does for pixel runs: an existing run needs --resume, a different
    diffusion setup is refused on resume, more steps continue it, and the result samples."""
    from synthkit.training.runlog import read_log

    run = tmp_path / "run"
    base = ["train", world["cohort"], "--out", run, "--timesteps", "10", "--lr", "1e-3", "--checkpoint-every", "1",
            "--quiet"]
    r = cli(*base, "--autoencoder", world["ae"], "--preset", "tiny", "--steps", "2")
    assert r.exit_code == 0, r.output
    r = cli(*base, "--autoencoder", world["ae"], "--preset", "tiny", "--steps", "2")
    assert r.exit_code == 2 and "--resume" in r.output and len(r.output.strip().splitlines()) == 1
    r = cli(*base, "--resume", "--steps", "3", "--prediction", "v")
    assert r.exit_code == 2 and "diffusion settings differ" in r.output and len(r.output.strip().splitlines()) == 1
    r = cli(*base, "--resume", "--steps", "3")  # the run's own autoencoder/ copy is used
    assert r.exit_code == 0, r.output
    assert [x["step"] for x in read_log(run / "log.jsonl")] == [1, 2, 3]
    import synthkit

    vol = synthkit.load(run).sample(phantom(size=16, seed=1)[1], seed=0, sampler="ddim", steps=2)
    assert vol.data.shape == (1, 16, 16, 16) and np.isfinite(vol.data).all()


def test_privacy_membership_attack_scores_a_latent_run_in_its_latent_space(world, tmp_path, cli):
    """`synthkit privacy --model LATENT_RUN`: the denoising error is measured where the denoiser was
    trained (posterior mean x scale factor, standardised per channel, pooled mask), and the attack
    runs end to end."""
    import synthkit
    from synthkit.io import discover_cohort
    from synthkit.io.cohort import read_image, read_mask
    from synthkit.networks.autoencoder import pool_cond
    from synthkit.preprocess import one_hot, preprocess_case
    from synthkit.privacy.audit.attacks import DenoisingError

    pipe = synthkit.load(world["run"])
    err = DenoisingError.from_loaded(pipe, timesteps=[3])
    case = discover_cohort(world["cohort"]).cases[0]
    image, mask = read_image(case), read_mask(case)
    pre = preprocess_case(image, mask, pipe.config.preprocess)
    with torch.no_grad():
        z0 = pipe.autoencoder.encode(pre.image[None].float())[0] * pipe.scale_factor
        assert pipe.config.latent_norm == "channel"  # the CLI's default: per-channel standardisation
        shift = torch.tensor(pipe.config.latent_shift).view(1, -1, 1, 1, 1)
        z0 = (z0 - shift) / torch.tensor(pipe.config.latent_scale).view(1, -1, 1, 1, 1)
        c = pool_cond(one_hot(pre.labels, tuple(pipe.config.preprocess.mask_labels))[None].float(), pipe.factor)
        noise = torch.randn(z0.shape, generator=torch.Generator().manual_seed(0))
        t = torch.full((1,), 3, dtype=torch.long)
        out = pipe.model(pipe.diffusion.model_input(pipe.diffusion.q_sample(z0, t, noise), c), t)
        target = noise if pipe.diffusion.cfg.prediction == "epsilon" else pipe.diffusion.v_target(z0, noise, t)
    assert err(image, mask) == pytest.approx(float(((out - target) ** 2).mean()), rel=1e-5)

    holdout = tmp_path / "holdout"
    r = cli("cohort", "demo", holdout, "--n", "4", "--size", "16", "--first", "1000", "--quiet")
    assert r.exit_code == 0, r.output
    r = cli("privacy", world["cohort"], holdout, "--holdout", holdout, "--model", world["run"], "--no-features",
            "--shape", "16", "--json", tmp_path / "p.json", "--quiet")
    assert r.exit_code == 0, r.output
    mem = json.loads((tmp_path / "p.json").read_text())["attacks"]["membership"]
    assert mem["n_members"] == 4 and mem["n_nonmembers"] == 4 and 0 <= mem["auc"] <= 1
