"""Attacks, measured: re-identification (linkage) and loss-based membership inference; the
synthetic->source links synthkit's writers leave behind; both in `synthkit privacy`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import privacy_cohorts as pc
import pytest

from synthkit.errors import UsageError
from synthkit.io import write_nifti, write_nnunet_dataset_json
from synthkit.privacy.audit import attacks, sources

SIZE = 24


# --------------------------------------------------------------------------- linkage
def test_linkage_finds_sources_and_tests_against_chance():
    rng = np.random.default_rng(0)
    n_syn, n_train = 40, 20
    src = rng.integers(0, n_train, n_syn)
    noise = rng.normal(size=(n_syn, n_train))
    leaky = noise.copy()
    leaky[np.arange(n_syn), src] += 5.0  # the source stands out
    res = attacks.linkage_attack({"leaky": leaky, "blind": noise}, src)
    assert res["statistics"]["leaky"]["top1"]["rate"] == 1.0
    assert res["statistics"]["leaky"]["top1"]["p_value"] < 1e-20
    assert res["statistics"]["leaky"]["top1"]["chance"] == pytest.approx(1 / 20)
    assert res["statistics"]["leaky"]["top5"]["chance"] == pytest.approx(5 / 20)
    blind = res["statistics"]["blind"]
    assert blind["top1"]["rate"] < 0.2 and blind["top1"]["p_value"] > 0.01
    assert res["best"]["statistic"] == "leaky" and res["statistics"]["leaky"]["median_rank"] == 1.0


def test_linkage_counts_ties_against_the_attacker_and_skips_unknown_sources():
    flat = np.zeros((3, 4))
    assert attacks.source_ranks(flat, np.array([0, 1, 2])).tolist() == [4, 4, 4]
    res = attacks.linkage_attack({"flat": flat}, [0, -1, 2])
    assert res["n_linked"] == 2 and res["statistics"]["flat"]["top1"]["hits"] == 0
    assert res["statistics"]["flat"]["top5"]["chance"] == 1.0 and res["statistics"]["flat"]["top5"]["p_value"] == 1.0
    assert "note" in attacks.linkage_attack({"flat": flat}, [-1, -1, -1])
    with pytest.raises(ValueError, match="beyond"):
        attacks.linkage_attack({"flat": flat}, [0, 1, 7])


# --------------------------------------------------------------------------- membership
def test_membership_attack_sees_a_memorising_model_and_not_a_blind_one():
    rng = np.random.default_rng(1)
    train = [rng.normal(size=50) for _ in range(12)]
    holdout = [rng.normal(size=50) for _ in range(12)]
    nearest = lambda x: min(float(np.mean((x - t) ** 2)) for t in train)  # a model that memorised its data
    res = attacks.membership_attack([nearest(x) for x in train], [nearest(x) for x in holdout], seed=0)
    assert res["auc"] == 1.0 and res["ci"][0] > 0.9 and res["p_value"] < 1e-4
    blind = attacks.membership_attack(rng.normal(size=30), rng.normal(size=30), seed=0)
    assert blind["ci"][0] < 0.5 < blind["ci"][1]
    again = attacks.membership_attack(rng.normal(size=30), rng.normal(size=30), seed=0)
    assert again["n_boot"] == 1000 and attacks.membership_attack([1, 2, 3], [2, 3, 4], seed=3) == \
        attacks.membership_attack([1, 2, 3], [2, 3, 4], seed=3)
    with pytest.raises(ValueError):
        attacks.membership_attack([1.0], [2.0, 3.0])
    a = rng.normal(size=17)
    b = np.r_[rng.normal(size=9), a[:3]]  # with ties
    assert attacks._auc(a, b) == pytest.approx(attacks.roc_auc(a, b))  # the bootstrap's AUC is sklearn's


# --------------------------------------------------------------------------- links on disk
def test_links_from_sample_manifest_augment_json_mapping_and_names(tmp_path):
    train = ["case_000", "case_001", "case_002"]
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(
        {"items": [{"case": "case_001", "k": 0, "images": ["imagesTr/case_001_s0_0000.nii.gz"]},
                   {"case": "other", "k": 2}]}))
    links, how = sources.read_links(tmp_path / "s", ["case_001_s0"], train)
    assert links == {"case_001_s0": "case_001", "other_s2": "other"} and "manifest" in how
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "augment.json").write_text(json.dumps(
        {"cases": [{"case": "syn_00000", "source": 2}, {"case": "real_0000", "source": 0, "real": True}]}))
    links, how = sources.read_links(tmp_path / "a", ["syn_00000", "real_0000"], train)
    assert links == {"syn_00000": "case_002"} and "augment" in how
    mapping = tmp_path / "private.json"
    mapping.write_text(json.dumps({"mapping": {"case_000#0": "syn_ab", "case_002#1": "syn_cd"}}))
    links, _ = sources.read_links(tmp_path / "a", [], train, mapping)
    assert links == {"syn_ab": "case_000", "syn_cd": "case_002"}
    (tmp_path / "n").mkdir()
    links, how = sources.read_links(tmp_path / "n", ["case_000_s3", "xyz"], train)
    assert links == {"case_000_s3": "case_000"} and "names" in how
    assert attacks.sources_from_ids(["case_000_s3", "xyz"], train, links).tolist() == [0, -1]
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(UsageError, match="not a synthkit manifest"):
        sources.read_links(tmp_path / "n", [], train, tmp_path / "bad.json")


# --------------------------------------------------------------------------- `synthkit privacy`
def _write(root: Path, items, suffix: str = "") -> Path:
    for cid, img, aff, lab in items:
        write_nifti(root / "imagesTr" / f"{cid}{suffix}_0000.nii.gz", img, aff)
        if lab is not None:
            write_nifti(root / "labelsTr" / f"{cid}{suffix}.nii.gz", lab, aff, is_label=True)
    write_nnunet_dataset_json(root, ("T1",), {"background": 0, "head": 1, "tumour": 2}, len(items))
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Train / holdout folders of one texture, a tiny run trained on train, and a synthetic folder
    named like `synthkit sample` output: copies of 3 training subjects and 3 fresh subjects."""
    from synthkit.config import (
        DiffusionConfig,
        PreprocessConfig,
        RunConfig,
        TrainConfig,
        model_config,
    )
    from synthkit.training import train

    root = tmp_path_factory.mktemp("attacks")
    tr_items = pc.cohort(range(10), SIZE)
    train_dir = _write(root / "train", tr_items)
    holdout_dir = _write(root / "holdout", pc.cohort(range(10, 20), SIZE))
    rng = np.random.default_rng(3)
    syn = [(cid, pc.warped_copy(img, rng, rotation=2.0, scale=0.02, elastic=0.4, gamma=0.15, bias=0.05, noise=0.15),
            aff, lab) for cid, img, aff, lab in tr_items[:3]]
    syn += pc.cohort(range(40, 43), SIZE, prefix="fresh_")
    synth_dir = _write(root / "synth", syn, suffix="_s0")
    cfg = RunConfig(model=model_config("tiny"), diffusion=DiffusionConfig(timesteps=10),
                    preprocess=PreprocessConfig(target_shape=(16, 16, 16)),
                    train=TrainConfig(steps=4, batch_size=2, lr=1e-3, checkpoint_every=4, seed=0), preset="tiny")
    run = train(train_dir, root / "run", cfg, progress=False)
    return root, train_dir, holdout_dir, synth_dir, Path(run)


def test_privacy_reports_linkage_and_membership_in_json_and_html(cli, world, tmp_path):
    _, train_dir, holdout_dir, synth_dir, run = world
    res = cli("privacy", train_dir, synth_dir, "--holdout", holdout_dir, "--model", run, "--no-features",
              "--shape", SIZE, "--json", tmp_path / "p.json", "--report", tmp_path / "rep")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "p.json").read_text())
    link = data["attacks"]["linkage"]
    assert link["n_linked"] == 3 and link["links_from"] == "case names {case}_s{k}"  # fresh_* are not training cases
    ident = link["statistics"]["identity"]
    assert ident["top1"]["rate"] == 1.0 and ident["top1"]["chance"] == pytest.approx(0.1)
    assert ident["top1"]["p_value"] == pytest.approx(1e-3)  # 3 of 3 at chance 1/10
    assert set(link["statistics"]) == {"identity", "shape_dice", "image"}
    mem = data["attacks"]["membership"]
    assert mem["n_members"] == 10 and mem["n_nonmembers"] == 10 and 0 <= mem["ci"][0] <= mem["auc"] <= mem["ci"][1] <= 1
    assert mem["timesteps"] == sorted(set(mem["timesteps"])) and all(0 <= t < 10 for t in mem["timesteps"])
    assert "re-identification" in res.output and "membership inference from the denoising loss" in res.output
    html = (tmp_path / "rep" / "privacy_report.html").read_text()
    assert "Re-identification attack" in html and "Membership-inference attack" in html
    # seeded: the same run gives the same numbers
    res = cli("privacy", train_dir, synth_dir, "--holdout", holdout_dir, "--model", run, "--no-features",
              "--shape", SIZE, "--json", tmp_path / "q.json", "--quiet")
    again = json.loads((tmp_path / "q.json").read_text())["attacks"]
    assert again["membership"]["auc"] == mem["auc"] and again["linkage"] == link


def test_attacks_that_cannot_run_say_why(cli, world, tmp_path):
    _, train_dir, holdout_dir, synth_dir, run = world
    res = cli("privacy", train_dir, holdout_dir, "--no-features", "--shape", SIZE, "--json", tmp_path / "p.json",
              "--quiet")
    assert res.exit_code == 0, res.output
    assert "not computed: linkage attack" in res.output and "not computed: membership attack" in res.output
    assert json.loads((tmp_path / "p.json").read_text())["attacks"] == {}
    res = cli("privacy", train_dir, synth_dir, "--model", run, "--no-features", "--shape", SIZE, "--quiet")
    assert res.exit_code == 0 and "needs a holdout set" in res.output
    res = cli("privacy", train_dir, synth_dir, "--sources", tmp_path / "missing.json", "--no-features", "--shape", SIZE)
    assert res.exit_code == 2 and "missing.json" in res.output and "Traceback" not in res.output
