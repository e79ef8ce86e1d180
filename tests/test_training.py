"""Training loop: run folder contents, exact resume (in-process and after kill -9), multimodal."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from process_helpers import kill_after_log_lines
from test_training_helpers import write_phantom_cohort

from synthkit.config import DiffusionConfig, PreprocessConfig, RunConfig, TrainConfig, model_config
from synthkit.errors import UsageError
from synthkit.runtime import checkpoint as ckpt
from synthkit.training.loop import train
from synthkit.training.runlog import read_log
from synthkit.training.trainer import Trainer


def tiny_cfg(steps: int = 6, **train_kw) -> RunConfig:
    kw = {"steps": steps, "checkpoint_every": 2, "batch_size": 2, "lr": 1e-3, "lr_final": 1e-4, "seed": 3}
    kw.update(train_kw)
    return RunConfig(model=model_config("tiny"), diffusion=DiffusionConfig(timesteps=10),
                     preprocess=PreprocessConfig(target_shape=(16, 16, 16)), train=TrainConfig(**kw), preset="tiny")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_phantom_cohort(tmp_path_factory.mktemp("cohort"), n=3)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_weights(path)


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k, v in a.items():
        assert torch.equal(v, b[k]), k


def test_run_folder_has_config_weights_log_previews_checkpoints(cohort, tmp_path):
    run = train(cohort, tmp_path / "run", tiny_cfg(steps=4, preview_every=2))
    cfg = RunConfig.load(run / "config.json")
    assert cfg.data.channel_names == ("T1",) and cfg.preprocess.mask_labels == (1, 2)
    assert cfg.model.in_channels == 3 and cfg.train.steps == 4
    log = read_log(run / "log.jsonl")
    assert [r["step"] for r in log] == [1, 2, 3, 4]
    for r in log:
        assert {"step", "loss", "lr", "time", "images_per_s"} <= set(r)
        assert r["loss"] > 0 and r["images_per_s"] > 0
    assert [r["lr"] for r in log] == [1e-3, 1e-3, 1e-4, 1e-4]  # paper: drop for the second half
    assert sorted(p.name for p in (run / "previews").iterdir()) == ["step_00000002.png", "step_00000004.png"]
    assert [s for s, _ in ckpt.list_checkpoints(run)] == [2, 4]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    assert state.step == 4 and state.ema_updates == 4
    _assert_same(_weights(run / "model.safetensors"), state.ema)  # model.safetensors = EMA weights
    assert not any(torch.equal(state.ema[k], state.model[k]) for k in state.model if state.model[k].numel() > 8)
    assert json.loads((run / "train_cohort.json").read_text()) == {"path": str(cohort.resolve()), "cases": 3}
    intensity = json.loads((run / "intensity.json").read_text())
    assert len(intensity["lo"]) == 1 and intensity["lo"][0] < intensity["hi"][0]


def test_resume_after_interruption_is_bit_identical(cohort, tmp_path):
    full = train(cohort, tmp_path / "full", tiny_cfg(), cache_dir=tmp_path / "cache")
    t = Trainer(cohort, tmp_path / "cut", tiny_cfg(), cache_dir=tmp_path / "cache")
    t.run(stop_at=4)  # as if killed right after the step-4 checkpoint
    t.close()
    assert [s for s, _ in ckpt.list_checkpoints(tmp_path / "cut")] == [2, 4]
    resumed = train(cohort, tmp_path / "cut", tiny_cfg(), resume=True, cache_dir=tmp_path / "cache")
    a, b = ckpt.load_checkpoint(ckpt.latest_checkpoint(full)), ckpt.load_checkpoint(ckpt.latest_checkpoint(resumed))
    assert a.step == b.step == 6
    _assert_same(a.model, b.model)
    _assert_same(a.ema, b.ema)
    assert a.optimizer["state"].keys() == b.optimizer["state"].keys()
    for pid in a.optimizer["state"]:
        for name, v in a.optimizer["state"][pid].items():
            assert torch.equal(v, b.optimizer["state"][pid][name])
    la, lb = read_log(full / "log.jsonl"), read_log(resumed / "log.jsonl")
    assert [r["step"] for r in lb] == [1, 2, 3, 4, 5, 6]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]


def _cli_train(cohort: Path, run: Path, steps: int, *extra: str) -> list[str]:
    return [sys.executable, "-m", "synthkit", "train", str(cohort), "--out", str(run), "--preset", "tiny",
            "--shape", "16", "16", "16", "--timesteps", "10", "--steps", str(steps), "--checkpoint-every", "2",
            "--batch-size", "2", "--lr", "1e-3", "--lr-final", "1e-3", "--seed", "3", "--quiet", *extra]


def test_kill_dash_9_then_resume_reaches_same_steps_and_weights(cohort, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    run = tmp_path / "killed"
    # a long run (constant lr, so the total step count does not change the schedule) killed mid-way
    kill_after_log_lines(_cli_train(cohort, run, 400), run)
    killed_at = ckpt.list_checkpoints(run)[-1][0]
    assert 4 <= killed_at < 12
    out = subprocess.run(_cli_train(cohort, run, 12, "--resume"), check=False, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert [r["step"] for r in read_log(run / "log.jsonl")] == list(range(1, 13))
    assert RunConfig.load(run / "config.json").train.steps == 12
    # the same 12 steps without interruption
    ref = train(cohort, tmp_path / "ref", tiny_cfg(steps=12, lr_final=1e-3))
    _assert_same(_weights(ref / "model.safetensors"), _weights(run / "model.safetensors"))
    _assert_same(ckpt.load_checkpoint(ckpt.latest_checkpoint(ref)).model,
                 ckpt.load_checkpoint(ckpt.latest_checkpoint(run)).model)


def test_existing_run_needs_resume_and_matching_model(cohort, tmp_path):
    run = train(cohort, tmp_path / "run", tiny_cfg(steps=2))
    with pytest.raises(UsageError, match="--resume"):
        train(cohort, run, tiny_cfg(steps=2))
    other = RunConfig(**{**tiny_cfg(steps=4).__dict__, "model": model_config("small")})
    with pytest.raises(UsageError, match="model settings differ"):
        train(cohort, run, other, resume=True)
    # resuming a finished run with more steps continues it
    train(cohort, run, tiny_cfg(steps=3), resume=True)
    assert [r["step"] for r in read_log(run / "log.jsonl")] == [1, 2, 3]


def test_shape_must_fit_the_model(cohort, tmp_path):
    cfg = RunConfig(**{**tiny_cfg().__dict__, "preprocess": PreprocessConfig(target_shape=(15, 16, 16))})
    with pytest.raises(UsageError, match="divisible"):
        train(cohort, tmp_path / "run", cfg)


def test_fp16_on_cpu_falls_back_to_fp32_with_a_note(cohort, tmp_path):
    notes: list[str] = []
    train(cohort, tmp_path / "run", tiny_cfg(steps=1, precision="fp16"), on_note=notes.append)
    assert any("fp16" in n and "fp32" in n for n in notes)


def test_multimodal_brats_four_channels_four_mask_classes(tmp_path):
    cohort = write_phantom_cohort(tmp_path / "brats", n=2, channels=4, brats=True)
    base = tiny_cfg(steps=2, batch_size=1)
    cfg = RunConfig(model=base.model, diffusion=base.diffusion, train=base.train, preset="tiny",
                    preprocess=PreprocessConfig(target_shape=(16, 16, 16), label_map={"4": 3}, brain_label=4))
    run = train(cohort, tmp_path / "run", cfg)
    saved = RunConfig.load(run / "config.json")
    assert saved.data.channel_names == ("T1", "T1CE", "T2", "FLAIR")
    assert saved.preprocess.mask_labels == (1, 2, 3, 4)
    assert saved.model.image_channels == 4 and saved.model.mask_classes == 4 and saved.model.in_channels == 8
    assert saved.data.labels == {"background": 0, "NCR": 1, "ED": 2, "ET": 3, "brain": 4}  # network label values

    import synthkit

    gen = synthkit.load(run)
    from phantoms import phantom

    _, mask = phantom(size=16, seed=5)
    mask = type(mask)(mask.data * 4 * (mask.data == 1) + 2 * (mask.data == 2), mask.affine)  # brain 4 + oedema 2
    assert gen.prepare(mask, "network").has_head  # brain label present: background hold is on
    vol = gen.sample(mask, seed=1, sampler="ddim", steps=2, label_space="network")
    assert vol.data.shape == (4, 16, 16, 16) and vol.data.dtype == "float32"
    assert (vol.affine == mask.affine).all()
    # raw BraTS masks (ET = 4) work too: label_map maps 4 -> 3; no brain label, no background hold
    raw = type(mask)(np.where(mask.data == 2, 4, 0).astype(np.int16), mask.affine)
    cond, _, has_head = gen.prepare(raw)
    assert cond.shape == (4, 16, 16, 16) and not has_head and cond[2].sum() > 0


def test_cli_config_file_flags_override_and_unknown_keys(cohort, tmp_path, cli):
    cfg_file = tiny_cfg(steps=1).save(tmp_path / "cfg.json")
    run = tmp_path / "run"
    r = cli("train", cohort, "--out", run, "--config", cfg_file, "--steps", "2", "--grad-accum", "2",
            "--grad-checkpoint", "--loss", "l2", "--quiet")
    assert r.exit_code == 0, r.output
    saved = RunConfig.load(run / "config.json")
    assert saved.train.steps == 2 and saved.train.grad_accum == 2 and saved.train.batch_size == 2
    assert saved.model.gradient_checkpointing and saved.diffusion.loss == "l2" and saved.preset == "tiny"
    assert [x["step"] for x in read_log(run / "log.jsonl")] == [1, 2]
    data = json.loads(cfg_file.read_text())
    data["train"]["stesp"] = 3
    cfg_file.write_text(json.dumps(data))
    r = cli("train", cohort, "--out", tmp_path / "run2", "--config", cfg_file, "--quiet")
    assert r.exit_code != 0 and "stesp" in r.output and "Traceback" not in r.output
    r = cli("train", cohort, "--out", run, "--config", cfg_file.with_name("nope.json"), "--quiet")
    assert r.exit_code != 0 and "nope.json" in r.output


@pytest.mark.parametrize("flag", [("--precision", "fp8"), ("--loss", "l3"), ("--prediction", "x0")])
def test_cli_bad_choices_are_one_line_usage_errors(cohort, tmp_path, cli, flag):
    r = cli("train", cohort, "--out", tmp_path / "run", *flag, "--quiet")
    assert r.exit_code == 2 and flag[1] in r.output and "internal error" not in r.output
