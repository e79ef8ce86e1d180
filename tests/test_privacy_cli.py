"""`synthkit privacy` end to end on NIfTI cohorts with planted copies."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from synthkit.io import discover_cohort, read_image, read_mask, write_nifti
from synthkit.privacy.audit.calibration import plant_copy

SIZE = 24


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    from synthkit.io.demo_cohort import write_demo_cohort

    root = tmp_path_factory.mktemp("pcli")
    # fresh subjects are drawn exactly like the holdout (the same generator): the null the flag is calibrated for
    real = discover_cohort(write_demo_cohort(root / "real", n=19, size=SIZE, seed=0).root)
    fresh = dataclasses.replace(real, cases=real.cases[14:])
    for name, cases in (("train", real.cases[:9]), ("holdout", real.cases[9:14])):
        for c in cases:
            img, msk = read_image(c), read_mask(c)
            write_nifti(root / name / "imagesTr" / f"{c.case_id}_0000.nii.gz", img.data, img.affine)
            write_nifti(root / name / "labelsTr" / f"{c.case_id}.nii.gz", msk.data, msk.affine, is_label=True)
    syn = root / "synth" / "imagesTr"
    for i, c in enumerate(fresh.cases):
        img = read_image(c)
        write_nifti(syn / f"new{i}_0000.nii.gz", img.data, img.affine)
    rng = np.random.default_rng(11)
    img = read_image(real.cases[1])
    write_nifti(syn / "planted_a_0000.nii.gz", plant_copy(img.data, rng, noise=0.1, shift=(0, 1, 0)), img.affine)
    img = read_image(real.cases[5])
    write_nifti(syn / "planted_b_0000.nii.gz", plant_copy(img.data, rng, noise=0.1, flip=True), img.affine)
    return root, {"planted_a": real.cases[1].case_id, "planted_b": real.cases[5].case_id}


def test_privacy_with_holdout_writes_json_and_report(cli, folders, tmp_path):
    root, planted = folders
    res = cli("privacy", root / "train", root / "synth", "--holdout", root / "holdout", "--json",
              tmp_path / "p.json", "--report", tmp_path / "rep", "--shape", SIZE, "--quiet")
    assert res.exit_code == 0, res.output
    data = json.loads((tmp_path / "p.json").read_text())
    assert len(data["volumes"]) == 7
    for v in data["volumes"]:
        for key in ("id", "nearest", "distance", "similarity", "feature_distance", "ssim", "flagged", "reason",
                    "nearest_holdout", "closer_to_train"):
            assert key in v
    flagged = {v["id"]: v["nearest"] for v in data["volumes"] if v["flagged"]}
    assert flagged == planted
    assert {"closer_to_train", "membership_inference"} <= set(data["cohort"])
    assert data["calibration"]["reference"] == "holdout-to-train"
    assert data["settings"]["shape"] == [SIZE] * 3
    html = (tmp_path / "rep" / "privacy_report.html").read_text()
    assert html.count("data:image/png;base64,") == 2
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert "planted_a" in html and planted["planted_a"] in html


def test_privacy_without_holdout_says_what_it_could_not_compute(cli, folders, tmp_path):
    root, planted = folders
    res = cli("privacy", root / "train", root / "synth", "--json", tmp_path / "p.json", "--shape", SIZE,
              "--no-features")
    assert res.exit_code == 0, res.output
    assert "not computed: closer_to_train" in res.output
    assert "not computed: membership_inference" in res.output
    data = json.loads((tmp_path / "p.json").read_text())
    assert "closer_to_train" not in data["cohort"]
    assert data["calibration"]["reference"].startswith("train-to-train")
    assert {v["id"] for v in data["volumes"] if v["flagged"]} == set(planted)
    assert "weaker reference" in res.output
    assert all(v["feature_distance"] is None for v in data["volumes"])


def test_privacy_usage_errors_are_one_line(cli, folders, tmp_path):
    root, _ = folders
    res = cli("privacy", tmp_path / "nope", root / "synth")
    assert res.exit_code == 2 and "folder not found" in res.output and "Traceback" not in res.output
    res = cli("privacy", root / "train", root / "synth", "--alpha", "0.9")
    assert res.exit_code == 2 and "--alpha" in res.output


def test_a_warm_cache_skips_the_training_side_and_decides_identically(cli, folders, tmp_path, monkeypatch):
    """`synthkit privacy` keeps the training side (and the planted-copy self-test) in the reference
    cache: the second run reads, aligns and featurises no training or holdout volume and plants no
    copy, and all three runs (cold, warm, --no-cache) write the same JSON, byte for byte."""
    import collections

    from synthkit.privacy.audit import check, runner
    from synthkit.privacy.audit.features import FeatureSpace
    from synthkit.privacy.audit.identity import IdentityReference

    root, planted = folders
    monkeypatch.setenv("SYNTHKIT_CACHE_DIR", str(tmp_path / "cache"))  # cold: this test's own cache
    calls: collections.Counter[str] = collections.Counter()

    def spy(name, fn, key=None):
        def wrapped(*a, **k):
            calls[name if key is None else f"{name}:{key(*a, **k)}"] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(runner, "load_set", spy("read", runner.load_set, key=lambda path, what, *a, **k: what))
    monkeypatch.setattr(IdentityReference, "__init__", spy("align training", IdentityReference.__init__))
    monkeypatch.setattr(FeatureSpace, "__call__", spy("features", FeatureSpace.__call__))
    monkeypatch.setattr(check.planted, "planted_copies", spy("plant", check.planted.planted_copies))

    def run(name: str, *extra: str) -> bytes:
        calls.clear()
        res = cli("privacy", root / "train", root / "synth", "--holdout", root / "holdout", "--json",
                  tmp_path / f"{name}.json", "--shape", SIZE, "--quiet", *extra)
        assert res.exit_code == 0, res.output
        return (tmp_path / f"{name}.json").read_bytes()

    cold = run("cold")
    assert calls == {"read:training": 1, "read:holdout": 1, "read:synthetic": 1, "align training": 1,
                     "features": 5, "plant": 1}  # features: training and its mirrors, holdout, synthetic, planted
    warm = run("warm")
    assert calls == {"read:synthetic": 1, "features": 1}  # only the synthetic volumes
    fresh = run("uncached", "--no-cache")
    assert calls["align training"] == 1 and calls["plant"] == 1
    assert cold == warm == fresh
    data = json.loads(warm)
    assert {v["id"]: v["nearest"] for v in data["volumes"] if v["flagged"]} == planted
    assert data["calibration"]["planted_copies"]["planted"] > 0
    # a changed check setting is another entry: computed again, never a stale hit
    run("other", "--max-shift", "1")
    assert calls["align training"] == 1
