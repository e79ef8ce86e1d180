"""Issue 20's options for latent Med-DDPM: the mask at full resolution (space-to-depth), label-
weighted loss, classifier-free guidance on the mask, per-label intensity bounds; trained, resumed
and sampled at tiny shapes; old configs load as they were made."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthkit.config import (
    DiffusionConfig,
    PreprocessConfig,
    RunConfig,
    TrainConfig,
    from_dict,
    model_config,
)
from synthkit.diffusion import GaussianDiffusion
from synthkit.diffusion.guidance import GuidedDenoiser, guided
from synthkit.networks.autoencoder import latent_cond, pool_cond
from synthkit.runtime import checkpoint as ckpt
from synthkit.training.autoencoder_eval import load_autoencoder
from synthkit.training.autoencoder_latent import attach_autoencoder, latent_run_config
from synthkit.training.loop import train
from synthkit.training.runlog import read_log

REPO = Path(__file__).resolve().parent.parent


def _levers_cfg(ae: Path, steps: int = 6) -> RunConfig:
    base = RunConfig(model=dataclasses.replace(model_config("tiny"), cond_factor=4),
                     diffusion=DiffusionConfig(timesteps=10, prediction="v"), preset="tiny",
                     train=TrainConfig(steps=steps, checkpoint_every=2, batch_size=2, lr=1e-3, lr_final=1e-3, seed=3,
                                       label_weights=(1.0, 20.0), cond_drop=0.3))
    return latent_run_config(base, load_autoencoder(ae)[1])


# ----------------------------------------------------------------------------- pieces


def test_space_to_depth_keeps_every_voxel_and_factor_one_is_pooling():
    g = torch.Generator().manual_seed(0)
    cond = (torch.rand(2, 2, 8, 8, 8, generator=g) > 0.7).float()
    assert torch.equal(latent_cond(cond, 4, 1), pool_cond(cond, 4))
    full = latent_cond(cond, 4, 4)
    assert full.shape == (2, 2 * 64, 2, 2, 2)
    # channel k*64 + (i*4 + j)*4 + l holds voxel (4a+i, 4b+j, 4c+l) of label k: invert it
    back = full.reshape(2, 2, 4, 4, 4, 2, 2, 2).permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(2, 2, 8, 8, 8)
    assert torch.equal(back, cond)
    assert torch.equal(latent_cond(cond[0], 4, 4), full[0])  # unbatched
    half = latent_cond(cond, 4, 2)  # pool by 2, then 2x2x2 sub-blocks
    assert half.shape == (2, 16, 2, 2, 2)
    assert torch.allclose(half.reshape(2, 2, 8, 2, 2, 2).mean(2), pool_cond(cond, 4))
    with pytest.raises(ValueError, match="must divide"):
        latent_cond(cond, 4, 3)


def _toy_model(channels: int):
    conv = torch.nn.Conv3d(channels + 2, channels, 1)
    torch.nn.init.normal_(conv.weight, generator=torch.Generator().manual_seed(1))

    def model(x, t):
        return conv(x) + t.view(-1, 1, 1, 1, 1).float() * 0.01

    model.conv = conv
    return model


def test_unit_weights_and_no_condition_drop_give_the_old_loss_bit_for_bit():
    diff = GaussianDiffusion(DiffusionConfig(timesteps=10))
    x0 = torch.rand(3, 1, 4, 4, 4) * 2 - 1
    cond = torch.ones(3, 2, 4, 4, 4)
    model = _toy_model(1)
    plain = diff.training_loss(model, x0, cond, generator=torch.Generator().manual_seed(5))
    ones = diff.training_loss(model, x0, cond, generator=torch.Generator().manual_seed(5),
                              weight=torch.ones(3, 1, 4, 4, 4), cond_drop=0.0)
    assert torch.allclose(plain, ones, rtol=1e-6) and plain > 0
    # a weight puts the loss where it is large: a heavier tumour region moves the loss towards its error
    weight = torch.ones(3, 1, 4, 4, 4)
    weight[:, :, :2] = 50.0
    heavy = diff.training_loss(model, x0, cond, generator=torch.Generator().manual_seed(5), weight=weight)
    assert not torch.allclose(heavy, plain)


def test_condition_drop_zeroes_whole_samples_at_about_the_asked_rate():
    diff = GaussianDiffusion(DiffusionConfig(timesteps=10))
    seen = []

    def spy(x, t):
        seen.append(x[:, 1:].flatten(1).abs().sum(1))
        return x[:, :1]

    x0 = torch.zeros(400, 1, 2, 2, 2)
    cond = torch.ones(400, 2, 2, 2, 2)
    for _ in range(2):
        diff.training_loss(spy, x0, cond, generator=torch.Generator().manual_seed(9), cond_drop=0.25)
    a, b = seen
    assert torch.equal(a, b)  # seeded
    dropped = (a == 0).float().mean().item()
    assert 0.18 < dropped < 0.32 and set(a.unique().tolist()) <= {0.0, 16.0}


def test_guidance_is_the_conditional_model_at_one_and_extrapolates_otherwise():
    model = _toy_model(1)
    net = torch.nn.Module()
    net.forward = model  # type: ignore[method-assign]
    assert guided(net, 1, 1.0) is net
    x = torch.rand(2, 3, 4, 4, 4)
    t = torch.tensor([3, 7])
    g = GuidedDenoiser(net, 1, 3.0)
    unc = x.clone()
    unc[:, 1:] = 0
    want = model(unc, t) + 3.0 * (model(x, t) - model(unc, t))
    assert torch.allclose(g(x, t), want, atol=1e-6)
    with pytest.raises(ValueError):
        guided(net, 1, -1.0)


def test_old_config_files_load_with_the_rules_they_were_made_with():
    # the first demo-latent's config.json, written before these options existed
    cfg = RunConfig.load(REPO / "tests/data/legacy/latent_run_config.json")
    assert cfg.preprocess.intensity_bounds == "head" and cfg.autoencoder.preprocess.intensity_bounds == "head"
    assert cfg.model.cond_factor == 1 and cfg.train.label_weights is None and cfg.train.cond_drop == 0.0
    assert cfg.model.in_channels == 8 + 2
    assert PreprocessConfig().intensity_bounds == "per_label"  # new configs
    data = json.loads((REPO / "tests/data/legacy/latent_run_config.json").read_text())
    assert from_dict(RunConfig, data) == cfg


def test_per_label_bounds_keep_the_bright_rim_that_head_bounds_flatten():
    from synthkit.io.volume import Volume
    from synthkit.preprocess import preprocess_case

    rng = np.random.default_rng(0)
    img = rng.normal(100.0, 5.0, (16, 16, 16)).astype(np.float32)
    lab = np.ones((16, 16, 16), np.int16)
    lab[6:9, 6:9, 6:9] = 2  # 27 voxels: 0.7 % of the head, the brightest tissue
    img[lab == 2] = rng.normal(200.0, 10.0, 27)
    aff = np.eye(4)
    out = {}
    for rule in ("head", "per_label"):
        cfg = PreprocessConfig(target_shape=(16, 16, 16), intensity_bounds=rule)
        pre = preprocess_case(Volume(img[None], aff), Volume(lab[None], aff), cfg)
        out[rule] = pre.image[0].numpy()[lab == 2]
    assert (out["head"] >= 1.0).mean() > 0.5  # clipped flat at the top
    assert (out["per_label"] >= 1.0).mean() < 0.1 and out["per_label"].std() > 1.5 * out["head"].std()


# ----------------------------------------------------------------------------- whole runs


def test_latent_run_with_the_new_options_resumes_bit_identically(cohort, ae, tmp_path):
    from synthkit.training.autoencoder_latent import LatentTrainer

    for name in ("full", "cut"):
        attach_autoencoder(tmp_path / name, ae)
    full = train(cohort, tmp_path / "full", _levers_cfg(ae), progress=None)
    t = LatentTrainer(cohort, tmp_path / "cut", _levers_cfg(ae))
    assert t.dataset[0]["cond"].shape == (2 * 64, 4, 4, 4) and t.dataset[0]["frac"].shape == (2, 4, 4, 4)
    t.run(stop_at=4)
    t.close()
    resumed = train(cohort, tmp_path / "cut", _levers_cfg(ae), resume=True, progress=None)
    a, b = ckpt.load_checkpoint(ckpt.latest_checkpoint(full)), ckpt.load_checkpoint(ckpt.latest_checkpoint(resumed))
    assert a.step == b.step == 6
    for k, v in a.model.items():
        assert torch.equal(v, b.model[k]), k
    assert [r["loss"] for r in read_log(full / "log.jsonl")] == [r["loss"] for r in read_log(resumed / "log.jsonl")]


def test_cli_trains_and_samples_with_full_mask_weights_and_guidance(cohort, ae, tmp_path, cli):
    import synthkit
    from synthkit.io import discover_cohort, read_mask

    run = tmp_path / "run"
    r = cli("train", cohort, "--out", run, "--autoencoder", ae, "--preset", "tiny", "--timesteps", "10",
            "--steps", "3", "--checkpoint-every", "3", "--cond-factor", "4", "--label-weight", "1",
            "--label-weight", "30", "--cond-drop", "0.2", "--quiet")
    assert r.exit_code == 0, r.output
    cfg = RunConfig.load(run / "config.json")
    assert cfg.model.cond_factor == 4 and cfg.model.in_channels == 4 + 2 * 64
    assert cfg.train.label_weights == (1.0, 30.0) and cfg.train.cond_drop == 0.2
    assert cfg.preprocess.intensity_bounds == cfg.autoencoder.preprocess.intensity_bounds == "per_label"
    pipe = synthkit.load(run)
    mask = read_mask(discover_cohort(cohort).cases[0])
    kw = {"seed": 4, "sampler": "ddim", "steps": 3}
    a, b = pipe.sample(mask, guidance=2.0, **kw), pipe.sample(mask, guidance=2.0, **kw)
    plain = pipe.sample(mask, **kw)
    assert a.data.shape[1:] == mask.data.shape[1:] and np.allclose(a.affine, mask.affine)  # the mask's own grid
    assert np.array_equal(a.data, b.data) and not np.array_equal(a.data, plain.data)
    # the CLI: --guidance recorded in the manifest (absent when 1), the same volume as the API
    for g, out in (("2", tmp_path / "g2"), ("1", tmp_path / "g1")):
        r = cli("sample", cohort, "--model", run, "--out", out, "--sampler", "ddim", "--steps", "3", "--guidance", g,
                "--quiet")
        assert r.exit_code == 0, r.output
    m2, m1 = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("g2", "g1"))
    assert m2["settings"]["guidance"] == 2.0 and "guidance" not in m1["settings"]
    r = cli("sample", cohort, "--model", run, "--out", tmp_path / "bad", "--guidance", "-1", "--quiet")
    assert r.exit_code == 2 and "--guidance must be at least 0" in r.output


def test_refused_options_are_one_line(cohort, ae, tmp_path, cli):
    results = []
    r = cli("train", cohort, "--out", tmp_path / "p", "--preset", "tiny", "--cond-factor", "4", "--steps", "1", "--quiet")
    assert r.exit_code == 2 and "--cond-factor is for latent runs" in r.output
    results.append(r)
    r = cli("train", cohort, "--out", tmp_path / "w", "--autoencoder", ae, "--preset", "tiny", "--label-weight", "2",
            "--steps", "1", "--quiet")
    assert r.exit_code == 2 and "--label-weight was given 1 time" in r.output
    results.append(r)
    r = cli("train", cohort, "--out", tmp_path / "c", "--autoencoder", ae, "--preset", "tiny", "--cond-factor", "3",
            "--steps", "1", "--quiet")
    assert r.exit_code == 2 and "must divide" in r.output
    results.append(r)
    r = cli("train", cohort, "--out", tmp_path / "d", "--preset", "tiny", "--cond-drop", "1.5", "--quiet")
    assert r.exit_code == 2 and "--cond-drop must be in [0, 1)" in r.output
    results.append(r)
    assert all(len(x.output.strip().splitlines()) == 1 and "Traceback" not in x.output for x in results)


def test_kill_dash_9_then_resume_with_the_new_options_reaches_the_same_weights(cohort, ae, tmp_path):
    import os
    import subprocess
    import sys

    from process_helpers import kill_after_log_lines

    def cmd(run: Path, steps: int, *extra: str) -> list[str]:
        return [sys.executable, "-m", "synthkit", "train", str(cohort), "--out", str(run), "--preset", "tiny",
                "--timesteps", "10", "--steps", str(steps), "--checkpoint-every", "2", "--batch-size", "2",
                "--lr", "1e-3", "--lr-final", "1e-3", "--seed", "3", "--quiet", *extra]

    levers = ("--autoencoder", str(ae), "--cond-factor", "4", "--label-weight", "1", "--label-weight", "20",
              "--cond-drop", "0.3")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = tmp_path / "killed"
    kill_after_log_lines(cmd(run, 3000, *levers), run)
    total = ckpt.list_checkpoints(run)[-1][0] + 4
    out = subprocess.run(cmd(run, total, "--resume"), check=False, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    ref = tmp_path / "ref"
    out = subprocess.run(cmd(ref, total, *levers), check=False, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    a, b = ckpt.load_weights(ref / "model.safetensors"), ckpt.load_weights(run / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(v, b[k]) for k, v in a.items())


@pytest.mark.parametrize("c_old,c_new", [(1, 4), (1, 2), (2, 4)])
def test_init_from_a_pooled_run_computes_the_same_function(tmp_path, c_old, c_new):
    from synthkit.networks import build_denoiser
    from synthkit.training.init import init_weights

    old_cfg = RunConfig(model=dataclasses.replace(model_config("tiny", image_channels=4), cond_factor=c_old))
    torch.manual_seed(0)
    old = build_denoiser(old_cfg.model)
    ckpt.save_weights(tmp_path / "model.safetensors", {k: v.contiguous() for k, v in old.state_dict().items()})
    old_cfg.save(tmp_path / "config.json")
    new_cfg = dataclasses.replace(old_cfg, model=dataclasses.replace(old_cfg.model, cond_factor=c_new))
    new = build_denoiser(new_cfg.model)
    init_weights(new, new_cfg, tmp_path)
    g = torch.Generator().manual_seed(1)
    mask = (torch.rand(2, 2, 16, 16, 16, generator=g) > 0.6).float()
    z = torch.randn(2, 4, 4, 4, 4, generator=g)
    t = torch.tensor([3, 8])
    with torch.no_grad():
        a = old(torch.cat([z, latent_cond(mask, 4, c_old)], 1), t)
        b = new(torch.cat([z, latent_cond(mask, 4, c_new)], 1), t)
    assert torch.allclose(a, b, atol=1e-5)
    other = dataclasses.replace(new_cfg, model=model_config("small", image_channels=4, cond_factor=c_new))
    with pytest.raises(Exception, match="differs"):
        init_weights(build_denoiser(other.model), other, tmp_path)


def test_cli_init_from_a_run_then_resume(cohort, ae, tmp_path, cli):
    base = ("--autoencoder", str(ae), "--preset", "tiny", "--timesteps", "10", "--checkpoint-every", "2", "--quiet")
    r = cli("train", cohort, "--out", tmp_path / "a", "--steps", "2", *base)
    assert r.exit_code == 0, r.output
    r = cli("train", cohort, "--out", tmp_path / "b", "--steps", "2", "--init", tmp_path / "a", "--cond-factor", "4",
            *base)
    assert r.exit_code == 0, r.output
    r = cli("train", cohort, "--out", tmp_path / "b", "--steps", "4", "--resume", "--quiet")
    assert r.exit_code == 0, r.output
    r = cli("train", cohort, "--out", tmp_path / "c", "--steps", "1", "--init", tmp_path / "a", "--model", "pix2pix",
            "--quiet")
    assert r.exit_code == 2 and "--init starts a diffusion denoiser" in r.output
    r = cli("train", cohort, "--out", tmp_path / "d", "--steps", "1", "--init", tmp_path / "nothing", *base)
    assert r.exit_code != 0 and "nothing" in r.output and len(r.output.strip().splitlines()) == 1
