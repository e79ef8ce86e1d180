"""`synthkit demo` end to end with a throwaway tiny model at 16^3 and tiny stage sizes."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from phantoms import phantom

from synthkit.io import write_nifti, write_nnunet_dataset_json

TINY = {"n_cases": 4, "steps": 2, "n_diversity": 2, "n_shown": 2, "n_perturbed": 1, "n_boot": 10, "diversity_pairs": 3,
        "seg_steps": 20}


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src") and v:
                self.links.append(v)


def _links(page: Path) -> list[str]:
    p = _Links()
    p.feed(page.read_text())
    return p.links


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory) -> Path:
    from synthkit.config import (
        DiffusionConfig,
        PreprocessConfig,
        RunConfig,
        TrainConfig,
        model_config,
    )
    from synthkit.training import train

    root = tmp_path_factory.mktemp("demo_model")
    for i in range(5):
        img, msk = phantom(16, seed=i)
        write_nifti(root / "train" / "imagesTr" / f"case_{i:03d}_0000.nii.gz", img.data, img.affine)
        write_nifti(root / "train" / "labelsTr" / f"case_{i:03d}.nii.gz", msk.data, msk.affine, is_label=True)
    write_nnunet_dataset_json(root / "train", ("T1",), {"background": 0, "head": 1, "tumour": 2}, 5)
    cfg = RunConfig(model=model_config("tiny"), diffusion=DiffusionConfig(timesteps=10, prediction="v"),
                    preprocess=PreprocessConfig(target_shape=(16, 16, 16)),
                    train=TrainConfig(steps=3, batch_size=2, lr=1e-3, checkpoint_every=3, seed=0), preset="tiny")
    run = Path(train(root / "train", root / "run", cfg, progress=False))
    (run / "MODEL_CARD.md").write_text("# Tiny test model\n\nA **throwaway** model for tests.\n\n- 3 steps\n")
    return run


@pytest.fixture(scope="module")
def demo(tiny_run, tmp_path_factory):
    from synthkit.demo import DemoSizes, run_demo

    out = tmp_path_factory.mktemp("demo") / "out"
    lines: list[str] = []
    page = run_demo(out, model=tiny_run, seed=3, sizes=DemoSizes(**TINY), log=lines.append)
    return out, page, lines


def test_demo_writes_a_page_whose_links_all_resolve(demo):
    out, page, lines = demo
    assert page == out / "index.html" and page.is_file()
    record = json.loads((out / "demo.json").read_text())
    assert [s["stage"] for s in record["stages"]] == ["cohort", "sample", "anonymize", "evaluate", "perturb"]
    assert all(s["status"] == "ok" for s in record["stages"]), record["stages"]
    assert len(lines) == 5 and all(re.match(r"\[\d\] \w+: .+ \(\d+\.\d s\)$", ln) for ln in lines), lines
    links = _links(page)
    assert "evaluation/index.html" in links and "anonymized/privacy_report.html" in links
    imgs = [u for u in links if u.endswith(".png")]
    assert len(imgs) >= 2 * TINY["n_shown"] + TINY["n_diversity"] + 2 * TINY["n_perturbed"]
    for u in links:
        assert not re.match(r"^(/|[a-z]+:)", u), f"link not relative: {u}"
        assert (out / u).exists(), f"broken link {u}"
    for u in imgs:
        assert (out / u).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_page_has_metric_table_reading_and_model_card(demo):
    out, page, _ = demo
    html = page.read_text()
    metrics = json.loads((out / "evaluation" / "metrics.json").read_text())
    names = [r["name"] for r in metrics["sets"]]
    assert names == ["Med-DDPM (this model)", "control: blurred real", "control: noise in mask",
                     "control: labels erased", "control: texture scrambled"]
    table = re.search(r"<table class='metrics'>(.*?)</table>", html, re.DOTALL).group(1)
    assert "3D-FID" in table and all(n in table for n in names)
    fid = metrics["sets"][0]["fid"]["value"]
    assert f"{fid:.3g}" in html  # the number on the page is the one in the evaluation
    extractor = metrics["settings"]["extractor"]  # pretrained deepbet by default: named on the page
    assert extractor["pretrained"] and extractor["name"] in html and "Lower is better" in html
    assert "Tiny test model" in html and "<b>throwaway</b>" in html  # model card rendered
    assert "This stage failed" not in html
    assert re.search(r"flagged when its similarity to the closest training volume exceeds 0\.\d{3}", html)


def test_demo_outputs_carry_no_identifiers(demo, tiny_run):
    out, page, _ = demo
    html = page.read_text()
    assert str(out) not in html and str(tiny_run) not in html and "/tmp" not in html
    assert not re.search(r"patient|\d{4}-\d{2}-\d{2}", html, re.IGNORECASE)
    anon = sorted(p.name for p in (out / "anonymized" / "imagesTr").iterdir())
    assert len(anon) == TINY["n_cases"] and all(re.fullmatch(r"syn_[0-9a-f]{12}_0000\.nii\.gz", n) for n in anon)
    ids = sorted(p.name.removesuffix(".nii.gz") for p in (out / "cohort" / "labelsTr").iterdir())
    assert ids and all(i.startswith("case_1") for i in ids)  # held-out subjects (1000+)
    manifest = (out / "anonymized" / "manifest.json").read_text()
    assert not any(i in manifest for i in ids)


def test_demo_cohort_is_held_out_and_a_recorded_recipe_is_rebuilt_as_privacy_reference(tiny_run, tmp_path):
    import shutil

    from synthkit.demo.stages import HELD_OUT_FIRST, stage_cohort
    from synthkit.demo.state import Context, DemoSizes
    from synthkit.io.demo_cohort import write_demo_cohort
    from synthkit.pipeline import load

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "train_cohort.json").write_text(json.dumps({"demo_cohort": {"n": 5, "size": 16, "seed": 2, "first": 0}}))
    out = tmp_path / "out"
    (out / "img").mkdir(parents=True)
    ctx = Context(out, 2, DemoSizes(**TINY), "cpu", None, lambda m: None, gen=load(run), steps=2)
    stage_cohort(ctx, 16)
    assert [c.case_id for c in ctx.cohort.cases] == [f"case_{HELD_OUT_FIRST + i}" for i in range(TINY["n_cases"])]
    assert ctx.train_cohort == out / "training_cohort"
    rebuilt = sorted(p.name for p in (out / "training_cohort" / "imagesTr").iterdir())
    assert rebuilt == [f"case_{i:03d}_0000.nii.gz" for i in range(5)]
    # the rebuilt reference is exactly what `synthkit cohort demo --n 5 --size 16 --seed 2` writes
    ref = write_demo_cohort(tmp_path / "ref", n=5, size=16, seed=2)
    name = "imagesTr/case_004_0000.nii.gz"
    assert (ref.root / name).read_bytes() == (out / "training_cohort" / name).read_bytes()
    # a run that records its training folder is checked against that folder; nothing is rebuilt
    out2 = tmp_path / "out2"
    (out2 / "img").mkdir(parents=True)
    ctx2 = Context(out2, 2, DemoSizes(**TINY), "cpu", None, lambda m: None, gen=load(tiny_run), steps=2)
    stage_cohort(ctx2, 16)
    assert ctx2.train_cohort is not None and ctx2.train_cohort.name == "train"
    assert not (out2 / "training_cohort").exists()


def test_demo_is_deterministic_per_seed(demo, tiny_run, tmp_path):
    from synthkit.demo.stages import stage_cohort, stage_sample
    from synthkit.demo.state import Context, DemoSizes
    from synthkit.pipeline import load

    out, _, _ = demo
    ctx = Context(tmp_path, 3, DemoSizes(**TINY), "cpu", None, lambda m: None, gen=load(tiny_run), steps=2)
    (tmp_path / "img").mkdir()
    stage_cohort(ctx, 16)
    stage_sample(ctx)
    for sub in ("synthetic", "diversity"):
        a = json.loads((out / sub / "manifest.json").read_text())["items"]
        b = json.loads((tmp_path / sub / "manifest.json").read_text())["items"]
        assert [e["sha256"] for e in a] == [e["sha256"] for e in b]


def test_cli_bad_model_is_one_line_error(cli, tmp_path):
    res = cli("demo", "--out", tmp_path / "o", "--model", tmp_path / "nope", "--quiet")
    assert res.exit_code != 0
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthkit: error:") and "nope" in lines[0]
    assert not (tmp_path / "o").exists()


def test_cli_refuses_a_foreign_output_folder(cli, tiny_run, tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "thesis.txt").write_text("keep me")
    res = cli("demo", "--out", tmp_path / "o", "--model", tiny_run, "--quiet")
    assert res.exit_code == 2 and "not a synthkit demo output" in res.output
    assert (tmp_path / "o" / "thesis.txt").read_text() == "keep me"


def test_failing_stages_are_reported_and_the_page_still_written(cli, tiny_run, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("injected failure")

    monkeypatch.setattr("synthkit.jobs.sample.sample_masks", boom)
    monkeypatch.setattr("synthkit.jobs.anonymize.anonymize", boom)
    monkeypatch.setattr("synthkit.jobs.augment.augment_cohort", boom)
    out = tmp_path / "o"
    res = cli("demo", "--out", out, "--model", tiny_run, "--n-cases", "4", "--quiet")
    assert res.exit_code == 1
    failed = [ln for ln in res.output.splitlines() if "stage failed" in ln]
    assert len(failed) == 4 and "injected failure" in failed[0]
    html = (out / "index.html").read_text()
    assert html.count("This stage failed") >= 4 and "nothing to evaluate" in html
    assert f"demo page: {out / 'index.html'}" in res.output.replace("\n", "")


def test_train_steps_trains_a_fresh_model_and_uses_it(cli, tiny_run, tmp_path):
    out = tmp_path / "o"
    res = cli("demo", "--out", out, "--model", tiny_run, "--train-steps", "2", "--quick", "--n-cases", "4",
              "--steps", "2", "--seed", "1")
    assert res.exit_code == 0, res.output
    assert "[2] train: trained a fresh 'tiny' model for 2 steps -> model/" in res.output
    assert (out / "model" / "model.safetensors").is_file()
    record = json.loads((out / "demo.json").read_text())
    assert [s["stage"] for s in record["stages"]][:2] == ["cohort", "train"]
    assert record["model_source"] == "trained here for 2 steps"
    assert json.loads((out / "synthetic" / "manifest.json").read_text())["run"] == "model"
    trained_on = json.loads((out / "model" / "train_cohort.json").read_text())["path"]
    assert Path(trained_on).resolve() == (out / "training_cohort").resolve()
    assert min(p.name for p in (out / "training_cohort" / "labelsTr").iterdir()) == "case_000.nii.gz"
    html = (out / "index.html").read_text()
    assert "--model RUN --train-steps 2" in html and "This stage failed" not in html


@pytest.fixture(scope="module")
def tiny_latent_run(tiny_run, tmp_path_factory) -> Path:
    """A tiny latent run (4x autoencoder + latent denoiser at 16^3) on tiny_run's training cohort."""
    from synthkit.config import (
        AutoencoderRunConfig,
        PreprocessConfig,
        RunConfig,
        TrainConfig,
        autoencoder_config,
    )
    from synthkit.training import train
    from synthkit.training.autoencoder import train_autoencoder
    from synthkit.training.autoencoder_latent import prepare_latent_run

    root = tmp_path_factory.mktemp("demo_latent")
    cohort = tiny_run.parent / "train"
    ae_cfg = AutoencoderRunConfig(autoencoder=autoencoder_config("tiny"), preset="tiny", crop=8,
                                  preprocess=PreprocessConfig(target_shape=(16, 16, 16)),
                                  train=TrainConfig(steps=2, batch_size=2, checkpoint_every=2, preview_every=0))
    ae = train_autoencoder(cohort, root / "ae", ae_cfg)
    cfg = RunConfig.load(tiny_run / "config.json")
    cfg = prepare_latent_run(root / "run", cfg, ae)
    return Path(train(cohort, root / "run", cfg, progress=False))


def test_demo_runs_a_latent_model_and_says_so(tiny_latent_run, tmp_path):
    from synthkit.demo import DemoSizes, run_demo

    out = tmp_path / "o"
    page = run_demo(out, model=tiny_latent_run, seed=0, sizes=DemoSizes(**TINY))
    record = json.loads((out / "demo.json").read_text())
    assert {s["stage"]: s["status"] for s in record["stages"]} == {
        "cohort": "ok", "sample": "ok", "anonymize": "ok", "evaluate": "ok", "perturb": "ok"}
    html = page.read_text()
    assert "latent space" in html and "4x per axis" in html and "autoencoder sha256" in html
    assert json.loads((out / "synthetic" / "manifest.json").read_text())["run"] == "run"


def test_train_steps_with_a_latent_recipe_trains_a_denoiser_in_its_autoencoder(cli, tiny_latent_run, tmp_path):
    from synthkit.io.hashing import file_sha256

    out = tmp_path / "o"
    res = cli("demo", "--out", out, "--model", tiny_latent_run, "--train-steps", "2", "--quick", "--n-cases", "4",
              "--steps", "2", "--seed", "1")
    assert res.exit_code == 0, res.output
    ae = out / "model" / "autoencoder" / "model.safetensors"
    assert file_sha256(ae) == file_sha256(tiny_latent_run / "autoencoder" / "model.safetensors")
    assert json.loads((out / "model" / "config.json").read_text())["model_type"] == "latent"
    assert "This stage failed" not in (out / "index.html").read_text()
