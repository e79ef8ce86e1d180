"""The KL autoencoder of latent Med-DDPM: shapes, crops, metrics, the training run folder, exact
resume (in-process and after kill -9), eval (with the noise ceiling), and refused inputs."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from process_helpers import kill_after_log_lines

from synthkit.config import (
    AutoencoderConfig,
    AutoencoderRunConfig,
    ConfigError,
    PreprocessConfig,
    TrainConfig,
    autoencoder_config,
    from_dict,
)
from synthkit.errors import CheckpointError
from synthkit.networks.autoencoder import build_autoencoder, kl_divergence
from synthkit.runtime import checkpoint as ckpt
from synthkit.training.autoencoder import AutoencoderTrainer, train_autoencoder
from synthkit.training.autoencoder_data import head_boxes, masked_psnr, masked_ssim, sample_crops
from synthkit.training.autoencoder_eval import evaluate_autoencoder, load_autoencoder
from synthkit.training.runlog import read_log


def tiny_cfg(steps: int = 6, **train_kw) -> AutoencoderRunConfig:
    kw = {"steps": steps, "checkpoint_every": 2, "batch_size": 2, "lr": 1e-3, "lr_final": 1e-3, "seed": 3}
    kw.update(train_kw)
    return AutoencoderRunConfig(autoencoder=autoencoder_config("tiny"), crop=8, preset="tiny",
                                preprocess=PreprocessConfig(target_shape=(16, 16, 16)), train=TrainConfig(**kw))


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


# ----------------------------------------------------------------------------- network


@pytest.mark.parametrize("shape", [(16, 16, 16), (8, 12, 20)])
def test_any_size_divisible_by_four_maps_to_a_quarter_grid_and_back(shape):
    model = build_autoencoder(autoencoder_config("tiny"))
    x = torch.rand(2, 1, *shape) * 2 - 1
    mean, logvar = model.encode(x)
    assert mean.shape == logvar.shape == (2, 4, *(s // 4 for s in shape))
    assert model.decode(mean).shape == x.shape
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    r1, _, _ = model(x, generator=g1)
    r2, _, _ = model(x, generator=g2)
    assert torch.equal(r1, r2)  # the posterior sample comes from the generator only
    r3, _, _ = model(x, sample=False)
    assert torch.equal(r3, model.decode(mean)) and not torch.equal(r1, r3)


def test_sizes_not_divisible_and_wrong_channels_are_refused():
    model = build_autoencoder(autoencoder_config("tiny"))
    with pytest.raises(ValueError, match="divisible by 4"):
        model.encode(torch.zeros(1, 1, 16, 16, 18))
    with pytest.raises(ValueError, match=r"\(N, 1, D, H, W\)"):
        model.encode(torch.zeros(1, 2, 16, 16, 16))
    with pytest.raises(ValueError, match="norm_groups"):
        build_autoencoder(AutoencoderConfig(channels=(6, 8, 16), norm_groups=4))


def test_kl_is_zero_for_the_prior_and_positive_otherwise():
    z = torch.zeros(1, 4, 2, 2, 2)
    assert float(kl_divergence(z, z)) == 0.0
    assert float(kl_divergence(z + 0.5, z)) == pytest.approx(0.125)


def test_config_presets_and_unknown_keys():
    assert autoencoder_config("demo").channels == (32, 64, 128)
    assert autoencoder_config("small").downsample_factor == 4
    with pytest.raises(ConfigError, match="unknown preset"):
        autoencoder_config("huge")
    with pytest.raises(ConfigError, match="chanels"):
        from_dict(AutoencoderRunConfig, {"autoencoder": {"chanels": [8, 8, 16]}})


# ----------------------------------------------------------------------------- crops and metrics


def test_crops_meet_the_head_and_repeat_per_generator():
    labels = torch.zeros(2, 16, 16, 16, dtype=torch.int16)
    labels[0, 10:14, 2:5, 6:9] = 1
    labels[1, 0:3, 12:16, 0:2] = 2
    assert head_boxes(labels)[0].tolist() == [[10, 13], [2, 4], [6, 8]]
    images = torch.arange(2 * 16**3, dtype=torch.float32).reshape(2, 1, 16, 16, 16)
    crops, origins = sample_crops(images, head_boxes(labels), 8, 12, torch.Generator().manual_seed(0))
    again, origins2 = sample_crops(images, head_boxes(labels), 8, 12, torch.Generator().manual_seed(0))
    assert torch.equal(crops, again) and torch.equal(origins, origins2)
    assert crops.shape == (12, 1, 8, 8, 8) and set(origins[:, 0].tolist()) == {0, 1}
    for (case, d, h, w), crop in zip(origins.tolist(), crops, strict=True):
        assert 0 <= min(d, h, w) and max(d, h, w) <= 8
        assert labels[case, d:d + 8, h:h + 8, w:w + 8].any()
        assert torch.equal(crop, images[case, :, d:d + 8, h:h + 8, w:w + 8])


def test_masked_psnr_and_ssim_contracts():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 12, 12, generator=g) * 2 - 1
    noisy = x + 0.05 * torch.randn(x.shape, generator=g)
    noisier = x + 0.2 * torch.randn(x.shape, generator=g)
    head = torch.zeros(12, 12, 12, dtype=torch.bool)
    head[2:10, 2:10, 2:10] = True
    assert masked_psnr(x, x, head, 2.0) == math.inf
    assert masked_ssim(x, x, head, 2.0) == pytest.approx(1.0)
    assert masked_psnr(x, noisy, head, 2.0) > masked_psnr(x, noisier, head, 2.0)
    assert 1.0 > masked_ssim(x, noisy, head, 2.0) > masked_ssim(x, noisier, head, 2.0)
    assert masked_ssim(x, noisy, head, 2.0) == pytest.approx(masked_ssim(noisy, x, head, 2.0))
    mse = float(((x - noisy)[head] ** 2).mean())
    assert masked_psnr(x, noisy, head, 2.0) == pytest.approx(10 * math.log10(4.0 / mse), rel=1e-6)
    # only the masked voxels count
    spoiled = noisy.clone()
    spoiled[~head] = 5.0
    assert masked_psnr(x, spoiled, head, 2.0) == masked_psnr(x, noisy, head, 2.0)


# ----------------------------------------------------------------------------- training


def test_cli_train_writes_a_complete_run_folder(cohort, tmp_path, cli):
    run = tmp_path / "ae"
    r = cli("autoencoder", "train", cohort, "--out", run, "--preset", "tiny", "--shape", "16", "16", "16",
            "--crop", "8", "--steps", "4", "--checkpoint-every", "2", "--preview-every", "2", "--lr", "1e-3",
            "--threads", "1", "--latent-channels", "6", "--quiet")
    assert r.exit_code == 0, r.output
    cfg = AutoencoderRunConfig.load(run / "config.json")
    assert cfg.kind == "autoencoder" and cfg.preset == "tiny" and cfg.autoencoder.channels == (8, 8, 16)
    assert cfg.autoencoder.latent_channels == 6
    assert cfg.preprocess.target_shape == (16, 16, 16) and cfg.crop == 8 and cfg.data.channel_names == ("T1",)
    log = read_log(run / "log.jsonl")
    assert [x["step"] for x in log] == [1, 2, 3, 4]
    assert all({"loss", "l1", "kl", "lr", "time"} <= set(x) for x in log)
    assert log[-1]["l1"] < log[0]["l1"]  # learning
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 4]
    assert sorted(p.name for p in (run / "previews").iterdir()) == ["step_00000002.png", "step_00000004.png"]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    _same(ckpt.load_weights(run / "model.safetensors"), state.ema)
    # the recorded scale factor brings the posterior means of the training volumes to unit variance
    model, loaded = load_autoencoder(run)
    from synthkit.cache import cache_cohort

    data = cache_cohort(__import__("synthkit.io", fromlist=["x"]).discover_cohort(cohort), cfg.preprocess,
                        run / "cache")
    with torch.no_grad():
        means = torch.cat([model.encode(data.images[i:i + 1])[0].flatten() for i in range(len(data))])
    assert loaded.scale_factor == pytest.approx(1.0 / float(means.double().std(unbiased=False)), rel=1e-4)
    meta = json.loads(__import__("safetensors").safe_open(str(run / "model.safetensors"), "pt").metadata()["synthkit"])
    assert meta["info"]["scale_factor"] == pytest.approx(loaded.scale_factor)


def test_resume_after_interruption_is_bit_identical(cohort, tmp_path):
    full = train_autoencoder(cohort, tmp_path / "full", tiny_cfg(), cache_dir=tmp_path / "cache")
    t = AutoencoderTrainer(cohort, tmp_path / "cut", tiny_cfg(), cache_dir=tmp_path / "cache")
    t.run(stop_at=4)  # as if killed right after the step-4 checkpoint
    resumed = train_autoencoder(cohort, tmp_path / "cut", tiny_cfg(), resume=True, cache_dir=tmp_path / "cache")
    a, b = ckpt.load_checkpoint(ckpt.latest_checkpoint(full)), ckpt.load_checkpoint(ckpt.latest_checkpoint(resumed))
    assert a.step == b.step == 6
    _same(a.model, b.model)
    _same(a.ema, b.ema)
    for pid in a.optimizer["state"]:
        for name, v in a.optimizer["state"][pid].items():
            assert torch.equal(v, b.optimizer["state"][pid][name])
    la, lb = read_log(full / "log.jsonl"), read_log(resumed / "log.jsonl")
    assert [r["step"] for r in lb] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def _cli_train(cohort: Path, run: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "synthkit", "autoencoder", "train", str(cohort), "--out", str(run),
            "--preset", "tiny", "--shape", "16", "16", "16", "--crop", "8", "--steps", str(steps),
            "--checkpoint-every", "2", "--batch-size", "2", "--lr", "1e-3", "--lr-final", "1e-3", "--seed", "3",
            "--quiet", *extra]


def test_kill_dash_9_then_resume_reaches_the_same_weights(cohort, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = tmp_path / "killed"
    # a long run (constant lr, so the total step count does not change the schedule) killed mid-way
    kill_after_log_lines(_cli_train(cohort, run, 2000), run)
    killed_at = ckpt.list_checkpoints(run)[-1][0]
    assert killed_at >= 4
    total = killed_at + 4
    out = subprocess.run(_cli_train(cohort, run, total, "--resume"), check=False, env=env, capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr
    assert [r["step"] for r in read_log(run / "log.jsonl")] == list(range(1, total + 1))
    ref = train_autoencoder(cohort, tmp_path / "ref", tiny_cfg(steps=total), cache_dir=run / "cache")
    _same(ckpt.load_weights(ref / "model.safetensors"), ckpt.load_weights(run / "model.safetensors"))
    _same(ckpt.load_checkpoint(ckpt.latest_checkpoint(ref)).model,
          ckpt.load_checkpoint(ckpt.latest_checkpoint(run)).model)


# ----------------------------------------------------------------------------- eval


@pytest.fixture(scope="module")
def trained(cohort, tmp_path_factory) -> Path:
    return train_autoencoder(cohort, tmp_path_factory.mktemp("ae") / "ae", tiny_cfg(steps=3))


def test_eval_json_per_case_and_means(trained, cohort, tmp_path, cli):
    out = tmp_path / "eval.json"
    r = cli("autoencoder", "eval", trained, cohort, "--json", out)
    assert r.exit_code == 0, r.output
    assert "case_002" in r.output and "mean" in r.output
    rep = json.loads(out.read_text())
    assert [c["case_id"] for c in rep["cases"]] == ["case_000", "case_001", "case_002"]
    assert rep["shape"] == [16, 16, 16] and rep["precision"] == "fp32"
    for key in ("psnr", "ssim"):
        vals = [c[key] for c in rep["cases"]]
        assert all(math.isfinite(v) for v in vals)
        assert rep["mean"][key] == pytest.approx(sum(vals) / 3)
    assert all(-1 <= c["ssim"] <= 1 for c in rep["cases"])
    assert "psnr_ceiling" not in rep["mean"]


def test_demo_clean_copy_leaves_noisy_files_alone_and_gives_the_noise_ceiling(trained, tmp_path, cli):
    from synthkit.io import read_nifti

    r = cli("cohort", "demo", tmp_path / "noisy", "--n", "2", "--size", "16", "--seed", "5",
            "--clean-copy", tmp_path / "clean", "--quiet")
    assert r.exit_code == 0, r.output
    r = cli("cohort", "demo", tmp_path / "plain", "--n", "2", "--size", "16", "--seed", "5", "--quiet")
    assert r.exit_code == 0, r.output
    name = "imagesTr/case_001_0000.nii.gz"
    noisy, plain, clean = (read_nifti(tmp_path / d / name).data for d in ("noisy", "plain", "clean"))
    assert np.array_equal(noisy, plain)  # same bytes as without the flag
    assert not np.array_equal(noisy, clean) and np.corrcoef(noisy.ravel(), clean.ravel())[0, 1] > 0.95
    rep = evaluate_autoencoder(trained, tmp_path / "noisy", clean=tmp_path / "clean")
    for c in rep["cases"]:
        assert 15 < c["psnr_ceiling"] < 60 and math.isfinite(c["psnr_clean"])
    # the clean volume of a cohort against itself is a perfect reconstruction of it
    same = evaluate_autoencoder(trained, tmp_path / "clean", clean=tmp_path / "clean")
    assert all(c["psnr_ceiling"] > 80 for c in same["cases"])
    r = cli("autoencoder", "eval", trained, tmp_path / "noisy", "--clean", tmp_path / "clean")
    assert r.exit_code == 0 and "ceiling" in r.output


# ----------------------------------------------------------------------------- refused inputs


def test_pickle_checkpoint_and_weights_are_refused(cohort, trained, tmp_path, cli):
    import pickle

    run = tmp_path / "run"
    train_autoencoder(cohort, run, tiny_cfg(steps=2))
    (ckpt.checkpoint_dir(run) / "step_00000009.safetensors").write_bytes(pickle.dumps({"model": {}}))
    with pytest.raises(CheckpointError, match="pickle"):
        train_autoencoder(cohort, run, tiny_cfg(steps=10), resume=True)
    bad = tmp_path / "bad_ae"
    bad.mkdir()
    (bad / "config.json").write_text((trained / "config.json").read_text())
    (bad / "model.safetensors").write_bytes(pickle.dumps({"x": torch.zeros(1)}))
    r = cli("autoencoder", "eval", bad, cohort)
    assert r.exit_code != 0 and "pickle" in r.output and "Traceback" not in r.output


@pytest.mark.parametrize(("args", "needle"), [
    (("--crop", "6"), "--crop 6"),
    (("--crop", "32"), "larger than --shape"),
    (("--shape", "16", "16", "18"), "divisible by 4"),
    (("--preset", "huge"), "'huge' is not one of"),
    (("--precision", "fp16"), "'fp16' is not one of 'fp32', 'bf16'"),
    (("--steps", "0"), "at least 1"),
])
def test_bad_train_flags_are_one_line_errors(cohort, tmp_path, cli, args, needle):
    base = {"--preset": "tiny", "--crop": "8", "--steps": "2"}
    flags = [a for k, v in base.items() if k not in args for a in (k, v)]
    if "--shape" not in args:
        flags += ["--shape", "16", "16", "16"]
    r = cli("autoencoder", "train", cohort, "--out", tmp_path / "ae", *flags, *args, "--quiet")
    assert r.exit_code != 0 and needle in r.output, r.output
    assert "Traceback" not in r.output and "internal error" not in r.output
    assert len(r.output.strip().splitlines()) == 1


def test_eval_of_a_folder_that_is_no_autoencoder_names_it(cohort, tmp_path, cli):
    r = cli("autoencoder", "eval", tmp_path, cohort)
    assert r.exit_code != 0 and "config.json" in r.output and "Traceback" not in r.output
    (tmp_path / "config.json").write_text(json.dumps({"model": {}}))
    r = cli("autoencoder", "eval", tmp_path, cohort)
    assert r.exit_code != 0 and "not an autoencoder" in r.output
    r = cli("autoencoder", "train", tmp_path / "missing", "--out", tmp_path / "ae", "--quiet")
    assert r.exit_code != 0 and "missing" in r.output and "Traceback" not in r.output


# ----------------------------------------------------------------------------- decoder fine-tuning


def test_init_and_freeze_encoder_train_the_decoder_only(trained, cohort, tmp_path, cli):
    """`--init AE --freeze-encoder`: the encoder (EMA included) stays bit-identical, the scale
    factor is AE's, the decoder moves; the run records where it started; resume continues."""
    from synthkit.io.hashing import file_sha256

    run = tmp_path / "dec"
    args = ["autoencoder", "train", cohort, "--out", run, "--init", trained, "--freeze-encoder", "--shape", "16", "16",
            "16", "--crop", "8", "--batch-size", "2", "--checkpoint-every", "2", "--preview-every", "0", "--quiet"]
    res = cli(*args, "--steps", "2")
    assert res.exit_code == 0, res.output
    res = cli(*args, "--steps", "4", "--resume")
    assert res.exit_code == 0, res.output
    a, b = ckpt.load_weights(trained / "model.safetensors"), ckpt.load_weights(run / "model.safetensors")
    enc = [k for k in a if k.startswith("encoder.")]
    assert enc and all(torch.equal(a[k], b[k]) for k in enc)
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))
    last = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    assert last.step == 4 and all(torch.equal(a[k], last.model[k]) for k in enc)
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["freeze_encoder"] is True and cfg["init_sha256"] == file_sha256(trained / "model.safetensors")
    assert cfg["scale_factor"] == json.loads((trained / "config.json").read_text())["scale_factor"]
    res = cli("autoencoder", "train", cohort, "--out", tmp_path / "x", "--freeze-encoder", "--steps", "1", "--quiet")
    assert res.exit_code == 2 and "--init" in res.output and "Traceback" not in res.output
    res = cli("autoencoder", "train", cohort, "--out", tmp_path / "y", "--init", trained, "--preset", "small", "--quiet")
    assert res.exit_code == 2 and "--init takes the architecture" in res.output
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_decoder_noise_trains_a_different_decoder_on_the_same_frozen_encoder(trained, cohort, tmp_path, cli):
    base = ["autoencoder", "train", cohort, "--init", trained, "--freeze-encoder", "--shape", "16", "16", "16",
            "--crop", "8", "--batch-size", "2", "--steps", "2", "--checkpoint-every", "2", "--preview-every", "0",
            "--quiet"]
    for name, extra in (("plain", []), ("noisy", ["--decoder-noise", "0.5"])):
        res = cli(*base, "--out", tmp_path / name, *extra)
        assert res.exit_code == 0, res.output
    a, b = (ckpt.load_weights(tmp_path / n / "model.safetensors") for n in ("plain", "noisy"))
    assert all(torch.equal(a[k], b[k]) for k in a if k.startswith("encoder."))
    assert any(not torch.equal(a[k], b[k]) for k in a if k.startswith("decoder."))
    assert json.loads((tmp_path / "noisy" / "config.json").read_text())["decoder_noise"] == 0.5
    res = cli("autoencoder", "train", cohort, "--out", tmp_path / "bad", "--decoder-noise", "0.1", "--steps", "1",
              "--quiet")
    assert res.exit_code == 2 and "--decoder-noise goes with" in res.output
