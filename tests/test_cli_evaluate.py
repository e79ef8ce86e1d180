"""`synthkit evaluate` end to end on tiny NIfTI folders (16^3; pretrained deepbet features by
default, the random MedicalNet on request)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from synthkit.io.nifti import write_nifti


def _phantom_dir(root, n=6, size=16, seed=0, shift=0.0, masks=True):
    from phantoms import phantom

    for i in range(n):
        img, msk = phantom(size=size, seed=seed + i)
        data = img.data + shift * (img.data > 0)
        write_nifti(root / "imagesTr" / f"case_{i:03d}_0000.nii.gz", data, img.affine)
        if masks:
            write_nifti(root / "labelsTr" / f"case_{i:03d}.nii.gz", msk.data, msk.affine, is_label=True)
    return root


@pytest.fixture
def cli(cli):
    """The CLI with a short label-segmenter budget (label fidelity has its own tests)."""
    def invoke(*args):
        extra = ("--seg-steps", "10") if args and args[0] == "evaluate" else ()
        return cli(*args, *extra)

    return invoke


@pytest.fixture
def cohorts(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("SYNTHKIT_MEDICALNET_WEIGHTS", raising=False)
    real = _phantom_dir(tmp_path / "real")
    from synthkit.metrics.baselines import blurred, noise_in_mask

    blur = blurred(real, tmp_path / "blur", sigma=1.5)
    noise = noise_in_mask(real, tmp_path / "noise", seed=1)
    return tmp_path, real, blur, noise


def test_evaluate_writes_json_report_and_reader_kit(cli, cohorts):
    from synthkit.metrics.deepbet import PINNED_SHA256

    tmp, real, blur, noise = cohorts
    before = sorted(p.relative_to(real) for p in real.rglob("*"))
    res = cli("evaluate", real, blur, noise, "--json", tmp / "out.json", "--report", tmp / "rep",
              "--n-boot", "10", "--diversity-pairs", "5", "--reader-study", "2", tmp / "kit", "--c2st", "--quiet")
    assert res.exit_code == 0, res.output
    assert "RANDOM" not in res.output and "deepbet features" in res.output and "Precision" in res.output
    out = json.loads((tmp / "out.json").read_text())
    ext = out["settings"]["extractor"]
    assert out["warning"] is None and ext["features"] == "deepbet" and ext["pretrained"] is True
    assert ext["weights_sha256"] == PINNED_SHA256["data/models/bbox_model.pt"]
    assert out["settings"]["ms_ssim"]["scales"] == 2 and out["settings"]["grid"] == [16, 16, 16]
    assert [r["name"] for r in out["sets"]] == ["blur", "noise"]
    for r in out["sets"]:
        assert r["n"] == 6 and r["n_pairs"] == 6
        for m in ("fid", "mmd", "ms_ssim", "mse", "diversity"):
            assert np.isfinite(r[m]["value"]) and len(r[m]["ci95"]) == 2, m
        assert r["prdc"]["k"] == 5
        for m in ("precision", "recall", "density", "coverage"):
            assert 0.0 <= r["prdc"][m]["value"] <= (1.0 if m != "density" else 6 / 5), m
    assert out["real"]["fid_floor"]["n"] == 10
    for r in out["sets"]:
        assert 0.0 <= r["c2st"]["auc"] <= 1.0 and r["c2st"]["n_test"] == 6
    assert "C2ST blur: AUC" in res.output
    html = (tmp / "rep" / "index.html").read_text()
    assert "data:image/png;base64," in html and "WARNING" not in html and "noise" in html
    assert ext["weights_sha256"] in html and "Precision" in html and "deepbet" in html
    for png in ("montage.png", "histograms.png", "pca.png"):
        assert (tmp / "rep" / png).stat().st_size > 1000
    # input folder untouched, features cached elsewhere
    assert sorted(p.relative_to(real) for p in real.rglob("*")) == before
    assert len(list((tmp / "cache" / "features").glob("*.npy"))) == 18
    # reader kit: key apart from what is shown, no case ids leak
    shown = list((tmp / "kit" / "shown").glob("*.png"))
    assert len(shown) == 4 and not (tmp / "kit" / "shown" / "answer_key.csv").exists()
    assert not any("case" in p.name for p in shown)
    with open(tmp / "kit" / "answer_key.csv", newline="") as f:
        key = list(csv.DictReader(f))
    sheet = tmp / "kit" / "shown" / "answer_sheet.csv"
    sheet.write_text("image,answer\n" + "".join(f"{r['image']},{r['truth']}\n" for r in key))
    res = cli("reader-score", sheet, tmp / "kit" / "answer_key.csv")
    assert res.exit_code == 0 and "4/4 correct" in res.output


def test_identical_sets_score_zero_and_baselines_worse(cli, cohorts):
    """Pretrained features: the real set against itself has FID ~0 and perfect precision/recall;
    the blurred copy is far off; the random network only with --features random, and loudly."""
    tmp, real, blur, _ = cohorts
    res = cli("evaluate", real, real, blur, "--n-boot", "10", "--quiet", "--json", tmp / "o.json")
    assert res.exit_code == 0, res.output
    same, blurred = json.loads((tmp / "o.json").read_text())["sets"]
    assert same["fid"]["value"] < 1e-6 < blurred["fid"]["value"]
    assert same["prdc"]["precision"]["value"] == same["prdc"]["recall"]["value"] == 1.0
    assert same["prdc"]["coverage"]["value"] == 1.0
    assert same["prdc"]["density"]["value"] == pytest.approx(6 / 5)
    res = cli("evaluate", real, blur, "--features", "random", "--n-boot", "10", "--quiet", "--json", tmp / "r.json")
    assert res.exit_code == 0 and "NOT comparable" in res.output and "RANDOM" in res.output
    out = json.loads((tmp / "r.json").read_text())
    assert out["warning"] and out["fid_comparable_to_published"] is False
    assert out["settings"]["extractor"]["weights_sha256"] == "random"


def test_second_run_uses_cache_and_repeats_bit_for_bit(cli, cohorts):
    tmp, real, blur, _ = cohorts
    args = ("evaluate", real, blur, "--n-boot", "10", "--diversity-pairs", "3", "--quiet")
    assert cli(*args, "--json", tmp / "a.json").exit_code == 0
    mtimes = {p: p.stat().st_mtime_ns for p in (tmp / "cache" / "features").glob("*.npy")}
    assert cli(*args, "--json", tmp / "b.json").exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in (tmp / "cache" / "features").glob("*.npy")} == mtimes
    assert json.loads((tmp / "a.json").read_text()) == json.loads((tmp / "b.json").read_text())


def test_plain_nifti_folder_and_different_grid(cli, cohorts):
    tmp, real, _, _ = cohorts
    flat = tmp / "flat"
    rng = np.random.default_rng(0)
    for i in range(3):
        write_nifti(flat / f"s{i}.nii.gz", rng.random((1, 20, 18, 16)).astype(np.float32), np.eye(4))
    (flat / "patient_x.nii.gz").write_bytes(b"corrupt")  # one bad case: reported, not fatal
    res = cli("evaluate", real, flat, "--n-boot", "10", "--quiet", "--json", tmp / "o.json")
    assert res.exit_code == 0, res.output
    assert "skipped" in res.output and "patient_x" in res.output
    text = (tmp / "o.json").read_text()
    row = json.loads(text)["sets"][0]
    assert row["n"] == 3 and row["skipped"] == 1 and row["n_pairs"] == 0 and row["mse"] is None
    assert "patient_x" not in text  # file names are printed, never written
    assert cli("evaluate", real, flat, "--strict", "--quiet").exit_code != 0


@pytest.mark.parametrize("kind", ["empty", "missing", "unreadable"])
def test_bad_folder_is_one_line_error(cli, cohorts, kind, capfd):
    tmp, real, _, _ = cohorts
    bad = tmp / "bad"
    if kind != "missing":
        bad.mkdir()
    if kind == "unreadable":
        (bad / "a.nii.gz").write_bytes(b"garbage, not gzip")
        (bad / "b.nii").write_bytes(b"\x00" * 10)
    res = cli("evaluate", real, bad, "--quiet")
    assert res.exit_code != 0
    err = res.stderr if hasattr(res, "stderr") else res.output
    lines = [ln for ln in err.splitlines() if ln.startswith("synthkit: error")]
    assert len(lines) == 1 and "bad" in lines[0], err
    assert "Traceback" not in res.output


def test_wrong_weights_file_is_one_line_error(cli, cohorts):
    tmp, real, blur, _ = cohorts
    (tmp / "w.pth").write_bytes(b"nope")
    res = cli("evaluate", real, blur, "--feature-weights", tmp / "w.pth", "--quiet")
    assert res.exit_code != 0 and "w.pth" in res.output and "Traceback" not in res.output
    res = cli("evaluate", real, blur, "--features", "nonsense", "--quiet")
    assert res.exit_code != 0 and "--features" in res.output and "Traceback" not in res.output
    res = cli("evaluate", real, blur, "--features", "deepbet", "--feature-weights", tmp / "w.pth", "--quiet")
    assert res.exit_code != 0 and "--feature-weights" in res.output


def test_tampered_deepbet_file_is_refused(cli, cohorts, monkeypatch):
    """The loader checks the pinned SHA-256 before reading a byte of the model."""
    from synthkit.metrics import deepbet

    tmp, real, blur, _ = cohorts
    fake = tmp / "bbox_model.pt"
    data = bytearray(deepbet.locate().read_bytes())
    data[-100] ^= 0xFF
    fake.write_bytes(bytes(data))
    monkeypatch.setattr(deepbet, "locate", lambda file=deepbet.MODEL_FILE: fake)
    monkeypatch.setattr(deepbet, "ENCODER_ASSET", tmp / "absent.safetensors")  # the wheel's file is used then
    res = cli("evaluate", real, blur, "--quiet")
    assert res.exit_code != 0 and "SHA-256" in res.output and "refusing" in res.output
    assert "Traceback" not in res.output
