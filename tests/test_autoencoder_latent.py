"""Latent Med-DDPM training: pooled masks, cached scaled latents, the latent run folder, exact
resume (in-process and after kill -9), and refused combinations."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from process_helpers import kill_after_log_lines

from synthkit.config import (
    AutoencoderRunConfig,
    DiffusionConfig,
    RunConfig,
    TrainConfig,
    model_config,
)
from synthkit.runtime import checkpoint as ckpt
from synthkit.training.autoencoder_eval import load_autoencoder
from synthkit.training.autoencoder_latent import attach_autoencoder, latent_run_config, pool_cond
from synthkit.training.loop import train
from synthkit.training.runlog import read_log


def latent_cfg(ae: Path, steps: int = 6) -> RunConfig:
    base = RunConfig(model=model_config("tiny"), diffusion=DiffusionConfig(timesteps=10), preset="tiny",
                     train=TrainConfig(steps=steps, checkpoint_every=2, batch_size=2, lr=1e-3, lr_final=1e-3, seed=3))
    return latent_run_config(base, load_autoencoder(ae)[1])


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def test_pooling_keeps_a_one_voxel_tumour_as_a_partial_volume():
    cond = torch.zeros(2, 8, 8, 8)
    cond[0, :4] = 1.0  # head: the lower half
    cond[1, 5, 6, 7] = 1.0  # a one-voxel tumour
    pooled = pool_cond(cond, 4)
    assert pooled.shape == (2, 2, 2, 2)
    assert pooled[1, 1, 1, 1] == pytest.approx(1 / 64) and pooled[1].sum() == pytest.approx(1 / 64)
    assert pooled[0, 0].eq(1).all() and pooled[0, 1].eq(0).all()


def test_cli_latent_run_folder(cohort, ae, tmp_path, cli):
    run = tmp_path / "latent"
    r = cli("train", cohort, "--out", run, "--autoencoder", ae, "--preset", "tiny", "--timesteps", "10",
            "--steps", "2", "--checkpoint-every", "2", "--preview-every", "2", "--quiet")
    assert r.exit_code == 0, r.output
    cfg = RunConfig.load(run / "config.json")
    ae_cfg = AutoencoderRunConfig.load(ae / "config.json")
    assert cfg.model_type == "latent" and cfg.autoencoder == ae_cfg and cfg.autoencoder.scale_factor > 0
    assert cfg.preprocess.target_shape == (16, 16, 16)  # the autoencoder's grid
    assert cfg.model.image_channels == 4 and cfg.model.in_channels == 4 + 2
    assert (run / "autoencoder" / "model.safetensors").read_bytes() == (ae / "model.safetensors").read_bytes()
    assert [x["step"] for x in read_log(run / "log.jsonl")] == [1, 2]
    assert (run / "previews" / "step_00000002.png").is_file()
    meta = json.loads(__import__("safetensors").safe_open(str(run / "model.safetensors"), "pt").metadata()["synthkit"])
    from synthkit.io.hashing import file_sha256

    assert meta["info"]["autoencoder_sha256"] == file_sha256(ae / "model.safetensors")
    assert len(list((run / "cache").glob("latent_*.safetensors"))) == 3
    # the denoiser's targets are the autoencoder's scaled posterior means, standardised per channel
    # with the training latents' own mean/std (recorded in config.json); masks pooled to its grid
    from synthkit.training.autoencoder_latent import LatentTrainer

    lt = LatentTrainer(cohort, run, dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=3)),
                       resume=True)
    model, _ = load_autoencoder(ae)
    base = lt.dataset.base
    with torch.no_grad():
        zs = np.stack([(model.encode(base[i]["image"][None])[0][0] * ae_cfg.scale_factor).numpy()
                       for i in range(len(base))]).astype(np.float64)
    mean = zs.mean(axis=(0, 2, 3, 4))
    std = zs.transpose(1, 0, 2, 3, 4).reshape(zs.shape[1], -1).std(axis=1, ddof=1)
    assert cfg.latent_norm == "channel"
    np.testing.assert_allclose(cfg.latent_shift, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cfg.latent_scale, std, rtol=1e-5)
    want = (zs[1] - mean[:, None, None, None]) / std[:, None, None, None]
    np.testing.assert_allclose(lt.dataset[1]["image"].numpy(), want, rtol=1e-4, atol=1e-5)
    assert torch.allclose(lt.dataset[1]["cond"], pool_cond(base[1]["cond"], 4))
    lt.close()


def test_latent_resume_after_interruption_is_bit_identical(cohort, ae, tmp_path):
    from synthkit.training.autoencoder_latent import LatentTrainer

    for name in ("full", "cut"):
        attach_autoencoder(tmp_path / name, ae)
    full = train(cohort, tmp_path / "full", latent_cfg(ae), progress=None)
    t = LatentTrainer(cohort, tmp_path / "cut", latent_cfg(ae))
    t.run(stop_at=4)
    t.close()
    resumed = train(cohort, tmp_path / "cut", latent_cfg(ae), resume=True, progress=None)
    a, b = ckpt.load_checkpoint(ckpt.latest_checkpoint(full)), ckpt.load_checkpoint(ckpt.latest_checkpoint(resumed))
    assert a.step == b.step == 6
    _same(a.model, b.model)
    _same(a.ema, b.ema)
    assert [r["loss"] for r in read_log(full / "log.jsonl")] == [r["loss"] for r in read_log(resumed / "log.jsonl")]


def _cli(cohort: Path, run: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "synthkit", "train", str(cohort), "--out", str(run), "--preset", "tiny",
            "--timesteps", "10", "--steps", str(steps), "--checkpoint-every", "2", "--batch-size", "2",
            "--lr", "1e-3", "--lr-final", "1e-3", "--seed", "3", "--quiet", *extra]


def test_latent_kill_dash_9_then_resume_reaches_the_same_weights(cohort, ae, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = tmp_path / "killed"
    kill_after_log_lines(_cli(cohort, run, 3000, "--autoencoder", str(ae)), run)
    killed_at = ckpt.list_checkpoints(run)[-1][0]
    assert killed_at >= 4
    total = killed_at + 4
    out = subprocess.run(_cli(cohort, run, total, "--resume"), check=False, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert [r["step"] for r in read_log(run / "log.jsonl")] == list(range(1, total + 1))
    attach_autoencoder(tmp_path / "ref", ae)
    ref_cfg = dataclasses.replace(latent_cfg(ae, steps=total), latent_norm="channel")  # the CLI's default
    ref = train(cohort, tmp_path / "ref", ref_cfg, progress=None)
    _same(ckpt.load_weights(ref / "model.safetensors"), ckpt.load_weights(run / "model.safetensors"))


def test_refused_combinations_are_one_line(cohort, ae, tmp_path, cli):
    run = tmp_path / "run"
    r = cli("train", cohort, "--out", run, "--autoencoder", ae, "--model", "pix2pix", "--quiet")
    assert r.exit_code == 2 and "--autoencoder" in r.output and "Traceback" not in r.output
    r = cli("train", cohort, "--out", run, "--autoencoder", ae, "--preset", "small", "--quiet")
    assert r.exit_code == 2 and "divisible by 32" in r.output
    r = cli("train", cohort, "--out", run, "--autoencoder", tmp_path / "nope", "--quiet")
    assert r.exit_code != 0 and "nope" in r.output and "Traceback" not in r.output
    # a started latent run keeps its autoencoder
    r = cli("train", cohort, "--out", run, "--autoencoder", ae, "--preset", "tiny", "--timesteps", "10",
            "--steps", "1", "--quiet")
    assert r.exit_code == 0, r.output
    other = tmp_path / "other_ae"
    other.mkdir()
    data = json.loads((ae / "config.json").read_text())
    data["scale_factor"] = 1.0
    (other / "config.json").write_text(json.dumps(data))
    (other / "model.safetensors").write_bytes((ae / "model.safetensors").read_bytes())
    r = cli("train", cohort, "--out", run, "--autoencoder", other, "--resume", "--steps", "2", "--quiet")
    assert r.exit_code == 2 and "another autoencoder" in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_latent_norm_global_keeps_the_scaled_means_and_a_resume_keeps_the_runs_statistics(cohort, ae, tmp_path, cli):
    base = ("--preset", "tiny", "--timesteps", "10", "--checkpoint-every", "2", "--preview-every", "0", "--quiet")
    run = tmp_path / "global"
    r = cli("train", cohort, "--out", run, "--autoencoder", ae, "--steps", "2", "--latent-norm", "global", *base)
    assert r.exit_code == 0, r.output
    cfg = RunConfig.load(run / "config.json")
    assert cfg.latent_norm == "global" and cfg.latent_shift is None and cfg.latent_scale is None
    from synthkit.training.autoencoder_latent import LatentTrainer

    lt = LatentTrainer(cohort, run, cfg, resume=True)
    model, ae_cfg = load_autoencoder(ae)
    with torch.no_grad():
        z = model.encode(lt.dataset.base[1]["image"][None])[0][0] * ae_cfg.scale_factor
    assert torch.equal(lt.dataset[1]["image"], z)
    lt.close()
    # switching the normalisation of a started run is refused; a resume keeps the recorded statistics
    r = cli("train", cohort, "--out", run, "--resume", "--steps", "4", "--latent-norm", "channel", *base)
    assert r.exit_code == 2 and "latent_norm" in r.output and len(r.output.strip().splitlines()) == 1
    run2 = tmp_path / "channel"
    r = cli("train", cohort, "--out", run2, "--autoencoder", ae, "--steps", "2", *base)
    assert r.exit_code == 0, r.output
    data = json.loads((run2 / "config.json").read_text())
    data["latent_shift"] = [v + 0.5 for v in data["latent_shift"]]  # as if measured on other data
    (run2 / "config.json").write_text(json.dumps(data))
    r = cli("train", cohort, "--out", run2, "--resume", "--steps", "4", *base)
    assert r.exit_code == 0, r.output
    assert RunConfig.load(run2 / "config.json").latent_shift == tuple(data["latent_shift"])
    r = cli("train", cohort, "--out", tmp_path / "pix", "--steps", "1", "--latent-norm", "channel", *base)
    assert r.exit_code == 2 and "--latent-norm is for latent runs" in r.output


def test_channel_statistics_and_their_inverse():
    from synthkit.networks.autoencoder import channel_stats, standardize_latents

    g = torch.Generator().manual_seed(0)
    z = torch.randn(5, 3, 4, 4, 4, generator=g) * torch.tensor([0.2, 1.0, 3.0]).view(1, 3, 1, 1, 1) + \
        torch.tensor([2.0, 0.0, -1.0]).view(1, 3, 1, 1, 1)
    shift, scale = channel_stats(z)
    n = standardize_latents(z, shift, scale)
    assert torch.allclose(n.mean((0, 2, 3, 4)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(n.std((0, 2, 3, 4)), torch.ones(3), atol=1e-5)
    assert torch.allclose(standardize_latents(n, shift, scale, inverse=True), z, atol=1e-5)
    assert torch.allclose(standardize_latents(n[0], shift, scale, inverse=True), z[0], atol=1e-5)  # (C, ...)
    assert standardize_latents(z, None, None) is z
    with pytest.raises(ValueError, match="3 channel"):
        standardize_latents(z[:, :2], shift, scale)
