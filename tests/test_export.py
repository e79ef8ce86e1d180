"""`synthkit export`: a run folder reduced to config + EMA weights (+ autoencoder), optionally as
float16; the export samples like the run, a halved latent run re-records its autoencoder's hash,
and bad input leaves nothing behind."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_training_helpers import write_phantom_cohort
from typer.testing import CliRunner

from synthkit.cli.app import app
from synthkit.io import read_nifti
from synthkit.io.hashing import file_sha256

runner = CliRunner()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("export")
    cohort = write_phantom_cohort(root / "cohort", n=2)
    common = ["--steps", "2", "--checkpoint-every", "2", "--quiet"]
    r = runner.invoke(app, ["train", str(cohort), "--out", str(root / "pixel"), "--preset", "tiny", "--shape", "16", "16",
                            "16", "--timesteps", "10", *common])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["autoencoder", "train", str(cohort), "--out", str(root / "ae"), "--preset", "tiny", "--shape",
                            "16", "16", "16", "--crop", "8", "--batch-size", "2", "--preview-every", "0", *common])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["train", str(cohort), "--out", str(root / "latent"), "--autoencoder", str(root / "ae"),
                            "--preset", "tiny", "--timesteps", "10", *common])
    assert r.exit_code == 0, r.output
    return {"root": root, "cohort": cohort, "pixel": root / "pixel", "ae": root / "ae", "latent": root / "latent"}


def _files(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


def _sample(run: Path, cohort: Path, out: Path) -> np.ndarray:
    r = runner.invoke(app, ["sample", str(cohort), "--model", str(run), "--out", str(out), "--sampler", "ddim", "--steps", "4",
                            "--seed", "3", "--quiet"])
    assert r.exit_code == 0, r.output
    return read_nifti(next(out.rglob("*_0000.nii.gz"))).data


@pytest.mark.parametrize("kind", ["pixel", "latent"])
def test_export_keeps_only_what_sampling_needs_and_samples_the_same(runs, kind, tmp_path):
    src = runs[kind]
    assert (src / "checkpoint").is_dir() and (src / "log.jsonl").is_file()  # a real training folder
    r = runner.invoke(app, ["export", str(src), "--out", str(tmp_path / "exp")])
    assert r.exit_code == 0, r.output
    files = _files(tmp_path / "exp")
    assert "config.json" in files and "model.safetensors" in files and "intensity.json" in files
    assert not any(f.startswith(("checkpoint", "cache", "preview")) or f.endswith(".jsonl") for f in files), files
    if kind == "latent":
        assert {"autoencoder/config.json", "autoencoder/model.safetensors"} <= files
    assert file_sha256(tmp_path / "exp" / "model.safetensors") == file_sha256(src / "model.safetensors")
    assert "path" in json.loads((src / "train_cohort.json").read_text())  # the run's own record has it ...
    assert json.loads((tmp_path / "exp" / "train_cohort.json").read_text()) == {"cases": 2}  # ... the share not
    a = _sample(src, runs["cohort"], tmp_path / "s_run")
    b = _sample(tmp_path / "exp", runs["cohort"], tmp_path / "s_exp")
    assert np.array_equal(a, b)


def test_fp16_latent_export_rerecords_the_autoencoder_hash_and_samples_close(runs, tmp_path):
    from safetensors import safe_open

    from synthkit.pipeline.latent import recorded_autoencoder_sha256

    src, out = runs["latent"], tmp_path / "half"
    r = runner.invoke(app, ["export", str(src), "--out", str(out), "--fp16"])
    assert r.exit_code == 0, r.output
    for f in (out / "model.safetensors", out / "autoencoder" / "model.safetensors"):
        with safe_open(str(f), framework="pt") as h:
            assert {str(h.get_tensor(k).dtype) for k in h.keys() if h.get_tensor(k).is_floating_point()} == {"torch.float16"}  # noqa: SIM118
    ae_sha = file_sha256(out / "autoencoder" / "model.safetensors")
    assert ae_sha != file_sha256(src / "autoencoder" / "model.safetensors")
    assert recorded_autoencoder_sha256(out / "model.safetensors") == ae_sha
    assert (out / "model.safetensors").stat().st_size < 0.6 * (src / "model.safetensors").stat().st_size
    a = _sample(src, runs["cohort"], tmp_path / "s_run")
    b = _sample(out, runs["cohort"], tmp_path / "s_half")
    lo, hi = (float(json.loads((src / "intensity.json").read_text())[k][0]) for k in ("lo", "hi"))
    assert 0 < np.abs(a - b).max() < 0.02 * (hi - lo)


def test_fp16_autoencoder_export_loads_and_reconstructs_close(runs, tmp_path):
    import torch

    from synthkit.training.autoencoder_eval import load_autoencoder

    r = runner.invoke(app, ["export", str(runs["ae"]), "--out", str(tmp_path / "ae16"), "--fp16"])
    assert r.exit_code == 0, r.output
    assert _files(tmp_path / "ae16") == {"config.json", "model.safetensors", "train_cohort.json"}
    assert "path" not in (tmp_path / "ae16" / "train_cohort.json").read_text()
    full, _ = load_autoencoder(runs["ae"])
    half, _ = load_autoencoder(tmp_path / "ae16")
    x = torch.rand(1, 1, 16, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        ya, yb = full.decode(full.encode(x)[0]), half.decode(half.encode(x)[0])
    assert 0 < float((ya - yb).abs().max()) < 0.02


def test_export_refuses_bad_input_in_one_line_and_writes_nothing(runs, tmp_path):
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    cases = [([str(tmp_path / "nosuch"), "--out", str(tmp_path / "o1")], "no such run folder"),
             ([str(runs["pixel"]), "--out", str(busy)], "not an empty folder"),
             ([str(runs["pixel"]), "--out", str(runs["pixel"] / "inside")], "outside the run folder"),
             ([str(runs["cohort"]), "--out", str(tmp_path / "o2")], "config.json is missing")]
    for args, why in cases:
        r = runner.invoke(app, ["export", *args])
        assert r.exit_code != 0 and why in r.output, r.output
        assert "Traceback" not in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()
    assert sorted(p.name for p in busy.iterdir()) == ["keep.txt"]
    assert not (runs["pixel"] / "inside").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_a_decoder_fine_tuned_on_the_frozen_encoder_replaces_the_runs_autoencoder(runs, tmp_path):
    import torch

    from synthkit.pipeline.latent import recorded_autoencoder_sha256
    from synthkit.runtime.checkpoint import load_weights

    lat = runs["latent"]
    base = ["autoencoder", "train", str(runs["cohort"]), "--shape", "16", "16", "16", "--crop", "8", "--batch-size", "2",
            "--steps", "2", "--checkpoint-every", "2", "--preview-every", "0", "--quiet"]
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "dec"), "--init", str(lat / "autoencoder"), "--freeze-encoder"])
    assert r.exit_code == 0, r.output
    out = tmp_path / "swapped"
    r = runner.invoke(app, ["export", str(lat), "--out", str(out), "--fp16", "--autoencoder", str(tmp_path / "dec")])
    assert r.exit_code == 0, r.output
    shipped, dec, orig = (load_weights(p / "model.safetensors") for p in (out / "autoencoder", tmp_path / "dec",
                                                                           lat / "autoencoder"))
    assert all(torch.equal(shipped[k], dec[k].half()) for k in dec)
    assert any(not torch.equal(dec[k], orig[k]) for k in dec if k.startswith("decoder."))
    assert recorded_autoencoder_sha256(out / "model.safetensors") == file_sha256(out / "autoencoder" / "model.safetensors")
    assert json.loads((out / "config.json").read_text())["autoencoder"]["freeze_encoder"] is True
    _sample(out, runs["cohort"], tmp_path / "s")  # loads (hash and config checks) and samples
    # an autoencoder with another encoder is refused, and nothing is written
    r = runner.invoke(app, [*base, "--out", str(tmp_path / "other"), "--preset", "tiny", "--seed", "9"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["export", str(lat), "--out", str(tmp_path / "no"), "--autoencoder", str(tmp_path / "other")])
    assert r.exit_code == 2 and "differs from the run's" in r.output and not (tmp_path / "no").exists()


def test_autoencoder_eval_of_a_latent_run_scores_its_autoencoder(runs, tmp_path):
    out_run, out_ae = tmp_path / "run.json", tmp_path / "ae.json"
    for target, out in ((runs["latent"], out_run), (runs["latent"] / "autoencoder", out_ae)):
        r = runner.invoke(app, ["autoencoder", "eval", str(target), str(runs["cohort"]), "--json", str(out), "--quiet"])
        assert r.exit_code == 0, r.output
    a, b = json.loads(out_run.read_text()), json.loads(out_ae.read_text())
    assert a["mean"] == b["mean"] and len(a["cases"]) == 2
    r = runner.invoke(app, ["autoencoder", "eval", "no-such-model", str(runs["cohort"])])
    assert r.exit_code == 2 and "no-such-model" in r.output and "Traceback" not in r.output
