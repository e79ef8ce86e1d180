"""GAN baselines (Pix2Pix, DiscoGAN): networks, losses, CLI train/resume/sample, determinism."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from phantoms import phantom
from test_training_helpers import write_phantom_cohort

import synthkit
from synthkit.config import GanConfig, PreprocessConfig, RunConfig, TrainConfig, gan_config, to_dict
from synthkit.errors import UsageError
from synthkit.io import write_nifti
from synthkit.networks.gan import (
    PatchDiscriminator3D,
    UNetGenerator3D,
    build_gan,
    check_gan_shape,
    patch_shape,
)
from synthkit.runtime import checkpoint as ckpt
from synthkit.training.gan import GanTrainer, adversarial_loss, gan_lr_at
from synthkit.training.runlog import read_log

TINY = ("--preset", "tiny", "--shape", "16", "16", "16", "--batch-size", "2", "--quiet")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_phantom_cohort(tmp_path_factory.mktemp("gan_cohort"), n=3)


def _train(cli, cohort: Path, out: Path, model: str, *extra: str):
    return cli("train", cohort, "--out", out, "--model", model, *TINY, "--cache-dir", out.parent / "cache",
               *extra)


@pytest.fixture(scope="module", params=["pix2pix", "discogan"])
def trained(request, cohort, tmp_path_factory) -> tuple[str, Path]:
    """A tiny GAN trained for 3 steps through the CLI, once per model type."""
    from typer.testing import CliRunner

    from synthkit.cli.app import app

    out = tmp_path_factory.mktemp(request.param) / "run"
    args = ["train", str(cohort), "--out", str(out), "--model", request.param, *TINY, "--steps", "3",
            "--checkpoint-every", "2", "--preview-every", "3"]
    r = CliRunner().invoke(app, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    return request.param, out


# ---------------------------------------------------------------------- networks


def test_unet_generator_shapes_range_and_seeded_dropout():
    torch.manual_seed(0)
    net = UNetGenerator3D(2, 1, base_channels=4, depth=3, dropout=0.5).eval()
    x = torch.rand(1, 2, 16, 16, 8)
    y = net(x)
    assert y.shape == (1, 1, 16, 16, 8) and y.abs().max() <= 1.0
    assert torch.equal(net(x), y)  # no generator: no dropout, deterministic
    a = net(x, generator=torch.Generator().manual_seed(1))
    b = net(x, generator=torch.Generator().manual_seed(1))
    c = net(x, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c) and not torch.equal(a, y)
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.rand(1, 2, 12, 16, 16))


def test_patch_discriminator_output_shape_matches_formula():
    d = PatchDiscriminator3D(3, base_channels=4, layers=2)
    out = d(torch.rand(2, 3, 16, 24, 16))
    assert out.shape == (2, 1, *patch_shape((16, 24, 16), 2)) == (2, 1, 2, 4, 2)
    assert check_gan_shape(gan_config("tiny"), (16, 16, 16)) is None
    assert "divisible by 8" in check_gan_shape(gan_config("tiny"), (12, 16, 16))
    assert "too small" in check_gan_shape(GanConfig(depth=2, disc_layers=3), (16, 16, 16))


def test_build_gan_networks_and_channels():
    cfg = gan_config("tiny")
    p2p = build_gan("pix2pix", cfg, image_channels=2, mask_classes=3)
    assert set(p2p) == {"g", "d"}
    assert p2p["g"].downs[0].conv.in_channels == 3 and p2p["g"].ups[-1].conv.out_channels == 2
    assert p2p["d"].net[0].in_channels == 5  # conditional: cat([mask, image])
    disco = build_gan("discogan", cfg, image_channels=2, mask_classes=3)
    assert set(disco) == {"g", "g_ba", "d", "d_a"}
    assert disco["g_ba"].downs[0].conv.in_channels == 2 and disco["g_ba"].ups[-1].conv.out_channels == 3
    assert disco["d"].net[0].in_channels == 2 and disco["d_a"].net[0].in_channels == 3
    with pytest.raises(ValueError):
        build_gan("cyclegan", cfg, 1, 2)


def test_adversarial_losses_and_lr_schedule():
    pred = torch.tensor([[0.0, 2.0]])
    assert adversarial_loss(pred, True, "lsgan").item() == pytest.approx((1 + 1) / 2)
    assert adversarial_loss(pred, False, "lsgan").item() == pytest.approx((0 + 4) / 2)
    assert adversarial_loss(torch.zeros(3), True, "bce").item() == pytest.approx(np.log(2))
    g = GanConfig(lr=1e-3, lr_decay="linear")
    assert [gan_lr_at(s, g, 4) for s in range(4)] == [1e-3, 1e-3, 1e-3, 5e-4]
    assert gan_lr_at(3, GanConfig(lr=1e-3), 4) == 1e-3


def test_old_config_without_gan_keys_loads_as_ddpm(tmp_path):
    data = to_dict(RunConfig())
    assert data["model_type"] == "ddpm"
    del data["model_type"], data["gan"]
    (tmp_path / "config.json").write_text(json.dumps(data))
    cfg = RunConfig.load(tmp_path / "config.json")
    assert cfg.model_type == "ddpm" and cfg.gan == GanConfig()
    assert GanConfig().lambda_l1 == 100.0 and GanConfig().lr == 2e-4 and GanConfig().betas == (0.5, 0.999)
    again = RunConfig(model_type="discogan", gan=gan_config("tiny", lambda_l1=5.0))
    again.save(tmp_path / "c2.json")
    assert RunConfig.load(tmp_path / "c2.json") == again


# ---------------------------------------------------------------------- training


def test_cli_training_writes_a_run_folder(trained):
    kind, run = trained
    cfg = RunConfig.load(run / "config.json")
    assert cfg.model_type == kind and cfg.gan == gan_config("tiny") and cfg.preset == "tiny"
    assert cfg.model.mask_classes == 2 and cfg.model.image_channels == 1
    log = read_log(run / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3]
    for r in log:
        assert {"step", "loss_g", "loss_d", "lr", "time", "adv_g", "l1"} <= set(r)
        assert np.isfinite(r["loss_g"]) and np.isfinite(r["loss_d"]) and r["loss_d"] > 0
        assert r["lr"] == 2e-4
        assert ("recon" in r) == (kind == "discogan")
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 3]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    assert state.step == 3 and state.info["model_type"] == kind
    nets = {k.split(".")[0] for k in state.model}
    assert nets == ({"g", "d"} if kind == "pix2pix" else {"g", "g_ba", "d", "d_a"})
    weights = ckpt.load_weights(run / "model.safetensors")  # EMA of the mask -> image generator
    assert weights.keys() == state.ema.keys() == {k[2:] for k in state.model if k.startswith("g.")}
    assert (run / "previews" / "step_00000003.png").is_file()
    assert (run / "intensity.json").is_file() and (run / "train_cohort.json").is_file()


@pytest.mark.parametrize("kind", ["pix2pix", "discogan"])
def test_resume_continues_the_step_count_bit_identically(kind, cohort, tmp_path, cli):
    r = _train(cli, cohort, tmp_path / "full", kind, "--steps", "4", "--checkpoint-every", "2")
    assert r.exit_code == 0, r.output
    r = _train(cli, cohort, tmp_path / "cut", kind, "--steps", "2", "--checkpoint-every", "2")
    assert r.exit_code == 0, r.output
    # a second start without --resume is refused
    r = _train(cli, cohort, tmp_path / "cut", kind, "--steps", "4")
    assert r.exit_code != 0 and "--resume" in r.output
    r = cli("train", cohort, "--out", tmp_path / "cut", "--resume", "--steps", "4", "--quiet",
            "--cache-dir", tmp_path / "cache")
    assert r.exit_code == 0, r.output
    assert [x["step"] for x in read_log(tmp_path / "cut" / "log.jsonl")] == [1, 2, 3, 4]
    a = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "full"))
    b = ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "cut"))
    assert a.step == b.step == 4 and a.ema_updates == b.ema_updates == 4
    for k in a.model:
        assert torch.equal(a.model[k], b.model[k]), k
    for k in a.ema:
        assert torch.equal(a.ema[k], b.ema[k]), k
    # the model type is part of the run: resuming it as another model is refused
    other = "discogan" if kind == "pix2pix" else "pix2pix"
    r = cli("train", cohort, "--out", tmp_path / "cut", "--resume", "--model", other, "--steps", "5", "--quiet",
            "--cache-dir", tmp_path / "cache")
    assert r.exit_code != 0 and f"the run is a {kind} model" in r.output


def test_gan_trainer_loss_terms_finite_and_every_network_learns(cohort, tmp_path):
    cfg = RunConfig(model_type="discogan", gan=gan_config("tiny"), preset="tiny",
                    preprocess=PreprocessConfig(target_shape=(16, 16, 16)),
                    train=TrainConfig(steps=2, checkpoint_every=10, seed=1))
    t = GanTrainer(cohort, tmp_path / "run", cfg, cache_dir=tmp_path / "cache")
    before = {k: v.clone() for k, v in t.nets.state_dict().items()}
    t.run()
    t.close()
    after = t.nets.state_dict()
    for net in ("g", "g_ba", "d", "d_a"):
        changed = [k for k in after if k.startswith(net + ".") and not torch.equal(before[k], after[k])]
        assert changed, f"{net} was not updated"
    assert all(p.requires_grad for p in t.nets.parameters())  # discriminators unfrozen after the step


def test_unknown_model_and_diffusion_only_flags_are_one_line_errors(cohort, tmp_path, cli):
    r = cli("train", cohort, "--out", tmp_path / "x", "--model", "stylegan", "--quiet")
    assert r.exit_code == 2
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "'stylegan' is not one of 'ddpm', 'pix2pix', 'discogan'" in lines[0]
    assert "Traceback" not in r.output
    r = _train(cli, cohort, tmp_path / "y", "pix2pix", "--timesteps", "10")
    assert r.exit_code == 2 and "--timesteps applies to the diffusion model" in r.output
    r = cli("train", cohort, "--out", tmp_path / "z", "--model", "pix2pix", "--preset", "tiny",
            "--shape", "20", "20", "20", "--quiet")
    assert r.exit_code == 2 and "divisible by 8" in r.output
    assert not (tmp_path / "z" / "config.json").exists()


# ---------------------------------------------------------------------- sampling


def _odd_masks(folder: Path) -> Path:
    _, m = phantom(size=16, seed=4)
    a = m.data[0][:, 1:15, 2:14]  # 16 x 14 x 12, anisotropic
    aff = np.array([[0.0, -2.0, 0.0, 30.0], [1.2, 0.0, 0.0, -10.0], [0.0, 0.0, 3.0, 5.0], [0, 0, 0, 1]])
    write_nifti(folder / "odd.nii.gz", a, aff, is_label=True)
    _, m2 = phantom(size=20, seed=6)
    write_nifti(folder / "big.nii.gz", m2.data, m2.affine, is_label=True)
    return folder


def test_cli_sample_writes_volumes_on_each_masks_grid(trained, tmp_path, cli):
    kind, run = trained
    masks = _odd_masks(tmp_path / "masks")
    out = tmp_path / "synth"
    r = cli("sample", masks, "--model", run, "--out", out, "--per-mask", "2", "--quiet")
    assert r.exit_code == 0, r.output
    for case in ("odd", "big"):
        src = nib.load(masks / f"{case}.nii.gz")
        for k in (0, 1):
            img = nib.load(out / "imagesTr" / f"{case}_s{k}_0000.nii.gz")
            assert img.shape == src.shape
            np.testing.assert_allclose(img.affine, src.affine, atol=1e-5)
            assert np.isfinite(img.get_fdata()).all()
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["settings"]["sampler"] == kind and manifest["settings"]["steps"] == 1
    assert len(manifest["items"]) == 4
    # same arguments, fresh folder: bit-identical files
    r = cli("sample", masks, "--model", run, "--out", tmp_path / "again", "--per-mask", "2", "--quiet")
    assert r.exit_code == 0, r.output
    for item in manifest["items"]:
        assert (out / item["images"][0]).read_bytes() == (tmp_path / "again" / item["images"][0]).read_bytes()
    r = cli("sample", masks, "--model", run, "--out", tmp_path / "bad", "--sampler", "ddim", "--quiet")
    assert r.exit_code == 2 and f"this run is a {kind} GAN" in r.output


def test_load_and_sample_seeded_deterministic(trained):
    kind, run = trained
    gen = synthkit.load(run)
    assert isinstance(gen, synthkit.Pipeline) and gen.config.model_type == kind
    _, mask = phantom(size=16, seed=2)
    a = gen.sample(mask, seed=5)
    b = gen.sample(mask, seed=5)
    c = gen.sample(mask, seed=6)
    assert a.data.shape == (1, 16, 16, 16) and np.array_equal(a.affine, mask.affine)
    assert np.array_equal(a.data, b.data)
    assert not np.array_equal(a.data, c.data)  # dropout noise (Isola et al.) depends on the seed
    # without sampling dropout every seed gives the same volume
    gen.config = dataclasses.replace(gen.config, gan=dataclasses.replace(gen.config.gan, sample_dropout=False))
    assert np.array_equal(gen.sample(mask, seed=5).data, gen.sample(mask, seed=6).data)
    # background held at the lowest intensity outside the head (label 0)
    bg = mask.data[0] == 0
    lo = float(json.loads((run / "intensity.json").read_text())["lo"][0])
    np.testing.assert_allclose(a.data[0][bg], lo, atol=1e-4)


def test_gan_config_checks_refuse_what_the_trainer_cannot_do():
    from synthkit.training.gan import check_gan_config

    ok = RunConfig(model_type="pix2pix", gan=gan_config("tiny"))
    check_gan_config(ok)  # 32^3, fp32, one batch per step: fine
    for bad, msg in [(dataclasses.replace(ok, train=TrainConfig(precision="bf16")), "fp32"),
                     (dataclasses.replace(ok, train=TrainConfig(grad_accum=2)), "grad-accum"),
                     (dataclasses.replace(ok, gan=gan_config("tiny", norm="layer")), "gan.norm"),
                     (dataclasses.replace(ok, model_type="ddpm"), "not a GAN")]:
        with pytest.raises(UsageError, match=msg):
            check_gan_config(bad)
