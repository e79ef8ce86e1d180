"""Recipes: named settings on `train` and `autoencoder train`, recorded in config.json, listed in
--help; old runs still load; the CPU demo's settings on a much larger cohort give one note."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_training_helpers import write_phantom_cohort

from synthkit.config import AutoencoderRunConfig, RunConfig
from synthkit.recipes import PAPER_STEPS, RECIPES, demo_settings_note, get_recipe

TINY = ("--preset", "tiny", "--shape", "16", "16", "16", "--steps", "1", "--checkpoint-every", "1", "--quiet")


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_phantom_cohort(tmp_path_factory.mktemp("recipe_cohort"), n=3)


def test_every_recipe_builds_a_valid_config_that_fits_its_grid(tmp_path):
    for name, r in RECIPES.items():
        cfg = r.run_config()
        assert cfg.recipe == name and cfg.preprocess.target_shape == r.shape
        grid = [s // 4 for s in r.shape] if r.kind == "latent" else list(r.shape)
        assert all(g % cfg.model.downsample_factor == 0 for g in grid), name
        assert RunConfig.load(cfg.save(tmp_path / f"{name}.json")) == cfg  # round trip, no unknown keys
        if r.kind == "latent":
            ae = r.autoencoder_config()
            assert ae.recipe == name and ae.preprocess.target_shape == r.shape and ae.crop <= min(r.shape)
    paper = get_recipe("paper-head-pixel").run_config()
    assert (paper.train.steps, paper.train.lr, paper.train.lr_final, paper.train.batch_size) == (PAPER_STEPS, 1e-5, 1e-6, 1)
    assert paper.diffusion.timesteps == 250 and paper.diffusion.loss == "l1" and paper.diffusion.prediction == "epsilon"
    brats = get_recipe("brats-pixel").run_config()
    assert brats.preprocess.target_shape == (192, 192, 144) and brats.preprocess.label_map == {"4": 3}
    assert brats.preprocess.brain_label == 4 and brats.model.gradient_checkpointing


def test_runs_written_before_recipes_still_load():
    here = Path(__file__).parent
    legacy = here / "data" / "legacy"  # the first demo-latent's files
    for path in (here.parent / "synthkit" / "assets" / "models" / "demo" / "config.json",
                 legacy / "latent_run_config.json"):
        data = json.loads(path.read_text())
        assert "recipe" not in data
        assert RunConfig.load(path).recipe is None
    ae = legacy / "autoencoder_config.json"
    assert "recipe" not in json.loads(ae.read_text())
    assert AutoencoderRunConfig.load(ae).recipe is None


def test_train_recipe_is_recorded_and_flags_override_it(cohort, tmp_path, cli):
    r = cli("train", cohort, "--out", tmp_path / "run", "--recipe", "demo-pixel", *TINY, "--timesteps", "10")
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["recipe"] == "demo-pixel"
    assert cfg["train"]["lr"] == 2e-4 and cfg["train"]["batch_size"] == 4 and cfg["diffusion"]["prediction"] == "v"
    assert cfg["preprocess"]["target_shape"] == [16, 16, 16] and cfg["train"]["steps"] == 1  # the flags won
    r = cli("train", cohort, "--out", tmp_path / "run", "--resume", "--recipe", "paper-head-pixel", "--quiet")
    assert r.exit_code == 2 and "cannot resume with --recipe paper-head-pixel: the run was started with recipe " \
                                "demo-pixel" in r.output


def test_autoencoder_recipe_is_recorded(cohort, tmp_path, cli):
    r = cli("autoencoder", "train", cohort, "--out", tmp_path / "ae", "--recipe", "demo-latent", "--preset", "tiny",
            "--shape", "16", "16", "16", "--crop", "8", "--steps", "1", "--batch-size", "1", "--quiet")
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "ae" / "config.json").read_text())
    assert cfg["recipe"] == "demo-latent" and cfg["autoencoder"]["channels"] == [8, 8, 16]  # --preset tiny won
    assert cfg["train"]["precision"] == "bf16" and cfg["preset"] == "tiny"


def test_recipe_mistakes_are_one_line(cohort, tmp_path, cli):
    r = cli("train", cohort, "--out", tmp_path / "r", "--recipe", "paper-head-latent")
    assert r.exit_code == 2 and "recipe paper-head-latent is latent: first `synthkit autoencoder train" in r.output
    r = cli("autoencoder", "train", cohort, "--out", tmp_path / "a", "--recipe", "brats-pixel")
    assert r.exit_code == 2 and "is a pixel-space recipe" in r.output
    r = cli("train", cohort, "--out", tmp_path / "r", "--recipe", "paper")
    assert r.exit_code == 2 and "'paper' is not one of" in r.output
    r = cli("train", cohort, "--out", tmp_path / "r", "--recipe", "demo-pixel", "--model", "pix2pix")
    assert r.exit_code == 2 and "recipes are Med-DDPM settings" in r.output


def test_help_lists_the_recipes(cli):
    from typer.testing import CliRunner

    from synthkit.cli.app import app

    for args in (("train", "--help"), ("autoencoder", "train", "--help")):
        out = CliRunner().invoke(app, list(args), env={"COLUMNS": "400"}).output
        for name in RECIPES:
            assert name in out, (args, name)


def test_demo_settings_on_a_much_larger_cohort_give_one_note(cohort, tmp_path, cli, monkeypatch):
    assert demo_settings_note("demo-pixel", "small", 12_000, (32, 32, 32), 300).startswith(
        "note: recipe demo-pixel, 12,000 steps are the CPU demo's settings, on a cohort of 300 cases")
    assert demo_settings_note(None, "small", 1000, (32, 32, 32), 300) is not None  # the plain defaults
    assert demo_settings_note("demo-pixel", "small", 12_000, (32, 32, 32), 16) is None  # the demo's size
    assert demo_settings_note("paper-head-pixel", "paper", 100_000, (128,) * 3, 300) is None
    assert demo_settings_note(None, "small", 1000, (128,) * 3, 300) is None
    import synthkit.recipes

    monkeypatch.setattr(synthkit.recipes, "DEMO_COHORT_CASES", 0)  # 3 phantom cases count as "much larger"
    r = cli("train", cohort, "--out", tmp_path / "run", *TINY[:-1], "--timesteps", "10")
    assert r.exit_code == 0, r.output
    notes = [ln for ln in r.output.splitlines() if "CPU demo's settings" in ln]
    assert len(notes) == 1 and "preset tiny at 16x16x16" in notes[0]
