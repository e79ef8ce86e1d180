"""`synthkit augment`: classic torchio baseline, nnU-Net dataset writer/validator, the pipeline
with a (tiny, untrained) diffusion run, all on 16^3 volumes."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from synthkit.augment.classic import ClassicAugmentConfig, augment_case
from synthkit.augment.dataset import NnunetDatasetWriter, validate_nnunet_dataset
from synthkit.io.volume import Volume

LABELS = {"background": 0, "head": 1, "tumour": 2}
ALWAYS = ClassicAugmentConfig(
    p_rotation=1, p_scale=1, p_elastic=1, p_noise=1, p_blur=1, p_brightness=1, p_contrast=1,
    p_gamma=1, p_gamma_inverted=1,
)


def tiny_case(seed: int = 0, size: int = 16, channels: int = 1) -> tuple[Volume, Volume]:
    rng = np.random.default_rng(seed)
    g = np.indices((size,) * 3) - (size - 1) / 2
    head = (g**2).sum(0) < (0.42 * size) ** 2
    c = rng.uniform(-2, 2, 3)
    tumour = ((g - c[:, None, None, None]) ** 2).sum(0) < (size / 6) ** 2
    lab = np.where(tumour & head, 2, np.where(head, 1, 0)).astype(np.int16)[None]
    img = np.stack([100.0 * head + 80 * (lab[0] == 2) + rng.normal(0, 5, head.shape) for _ in range(channels)])
    aff = np.array([[-1.5, 0, 0, 10], [0, 1.5, 0, -20], [0, 0, 2.0, 5], [0, 0, 0, 1]])
    return Volume(img.astype(np.float32), aff), Volume(lab, aff)


def write_cohort(root: Path, n: int, seed: int = 0) -> Path:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(n):
        img, lab = tiny_case(seed + i)
        nib.save(nib.Nifti1Image(img.data[0], img.affine), root / "imagesTr" / f"pat{i:02d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(lab.data[0].astype(np.uint8), lab.affine), root / "labelsTr" / f"pat{i:02d}.nii.gz")
    (root / "dataset.json").write_text(json.dumps(
        {"channel_names": {"0": "T1"}, "labels": LABELS, "numTraining": n, "file_ending": ".nii.gz"}))
    return root


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------ classic augmentation


def test_classic_is_seeded_and_leaves_global_rng_alone():
    img, lab = tiny_case(0)
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a_img, a_lab, applied = augment_case(img, lab, seed=7, cfg=ALWAYS)
    assert torch.equal(torch.random.get_rng_state(), state)
    b_img, b_lab, applied_b = augment_case(img, lab, seed=7, cfg=ALWAYS)
    assert np.array_equal(a_img.data, b_img.data) and np.array_equal(a_lab.data, b_lab.data)
    assert applied == applied_b
    c_img, _, _ = augment_case(img, lab, seed=8, cfg=ALWAYS)
    assert not np.array_equal(a_img.data, c_img.data)
    names = [t["name"] for t in applied]
    for expected in ("Affine", "ElasticDeformation", "Noise", "Blur", "NnunetIntensity"):
        assert expected in names
    json.dumps(applied)  # recorded parameters are JSON


def test_classic_keeps_grid_and_labels_nearest():
    img, lab = tiny_case(1, channels=2)
    out_img, out_lab, _ = augment_case(img, lab, seed=3, cfg=ALWAYS)
    assert out_img.data.shape == img.data.shape and out_img.data.dtype == np.float32
    assert out_lab.data.shape == lab.data.shape and out_lab.data.dtype == lab.data.dtype
    assert np.array_equal(out_img.affine, img.affine) and np.array_equal(out_lab.affine, lab.affine)
    assert set(np.unique(out_lab.data)) <= {0, 1, 2}  # nearest neighbour: no blended values
    assert (out_lab.data == 2).any()
    assert np.isfinite(out_img.data).all()
    # the copy stays in the case's own intensity scale
    assert abs(float(out_img.data.mean()) - float(img.data.mean())) < 0.5 * float(img.data.std())


def test_classic_mirror_only_moves_image_and_label_together():
    img, lab = tiny_case(2)
    cfg = ClassicAugmentConfig(p_rotation=0, p_scale=0, p_elastic=0, p_noise=0, p_blur=0, p_brightness=0,
                               p_contrast=0, p_gamma=0, p_gamma_inverted=0, p_mirror=1.0)
    out_img, out_lab, applied = augment_case(img, lab, seed=0, cfg=cfg)
    assert np.array_equal(out_lab.data, lab.data[:, ::-1, ::-1, ::-1])
    assert np.allclose(out_img.data, img.data[:, ::-1, ::-1, ::-1], atol=1e-3)
    assert applied[-1]["name"] == "Flip"


# ------------------------------------------------------------------------ dataset + validator


def _write_valid(root: Path, n: int = 2) -> Path:
    w = NnunetDatasetWriter(root, ("T1",), LABELS)
    for i in range(n):
        img, lab = tiny_case(i)
        w.write_case(f"syn_{i:05d}", img, lab)
    w.finish({"format": "test"})
    return root


def test_writer_output_is_a_valid_nnunet_dataset(tmp_path):
    root = _write_valid(tmp_path / "ds")
    assert validate_nnunet_dataset(root) == []
    dj = json.loads((root / "dataset.json").read_text())
    assert dj == {"channel_names": {"0": "T1"}, "labels": LABELS, "numTraining": 2, "file_ending": ".nii.gz"}
    assert sorted(p.name for p in (root / "imagesTr").iterdir()) == ["syn_00000_0000.nii.gz", "syn_00001_0000.nii.gz"]
    with pytest.raises(Exception, match="already holds a dataset"):
        NnunetDatasetWriter(root, ("T1",), LABELS)


def test_writer_renumbers_labels_consecutively_and_keeps_their_names(tmp_path):
    from synthkit.io.nnunet import NnunetWriter, consecutive_labels

    brats = {"background": 0, "necrotic core": 1, "edema": 2, "enhancing": 4}
    assert consecutive_labels(brats) == ({"background": 0, "necrotic core": 1, "edema": 2, "enhancing": 3},
                                         {0: 0, 1: 1, 2: 2, 4: 3})
    img, lab = tiny_case(0)
    raw = lab.data.copy()
    raw[raw == 1] = 0
    raw[(raw == 2) & (np.indices(raw.shape)[1] % 2 == 0)] = 4  # half the tumour enhancing (4)
    raw[0, 8, 8, 8] = 1
    w = NnunetWriter(tmp_path / "ds", ("T1",), brats)
    w.write_case("c0", img, Volume(raw, lab.affine))
    with pytest.raises(ValueError, match=r"label values \[7\]"):  # refused before any file is written
        w.write_case("c1", img, Volume(np.where(raw == 2, 7, raw).astype(np.int16), lab.affine))
    assert not (tmp_path / "ds" / "imagesTr" / "c1_0000.nii.gz").exists()
    w.finish()
    written = np.asarray(nib.load(str(tmp_path / "ds" / "labelsTr" / "c0.nii.gz")).dataobj)
    assert np.array_equal(written == 3, raw[0] == 4) and np.array_equal(written == 1, raw[0] == 1)
    assert set(np.unique(written)) == {0, 1, 2, 3}
    dj = json.loads((tmp_path / "ds" / "dataset.json").read_text())
    assert dj["labels"] == {"background": 0, "necrotic core": 1, "edema": 2, "enhancing": 3}
    assert validate_nnunet_dataset(tmp_path / "ds") == []
    # without a table up front the values cannot be renumbered: a non-consecutive one is refused
    w = NnunetWriter(tmp_path / "ds2", ("T1",))
    w.write_case("c0", img, Volume(raw, lab.affine))
    with pytest.raises(ValueError, match="consecutive"):
        w.finish(labels=brats)
    assert not (tmp_path / "ds2" / "dataset.json").exists()


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (lambda r: (r / "imagesTr" / "syn_00001_0000.nii.gz").unlink(), "missing (label syn_00001.nii.gz has no image"),
        (lambda r: (r / "labelsTr" / "syn_00000.nii.gz").unlink(), "images of case 'syn_00000' have no label"),
        (lambda r: (r / "dataset.json").unlink(), "dataset.json: missing"),
        (lambda r: _patch_json(r, numTraining=5), "numTraining is 5 but labelsTr holds 2"),
        (lambda r: _patch_json(r, labels={"tumour": 2, "head": 1}), "must contain \"background\": 0"),
        (lambda r: _patch_json(r, labels={"background": 0, "head": 1}), "label values [2] not declared"),
        (lambda r: _resave(r / "imagesTr" / "syn_00000_0000.nii.gz", affine=np.diag([2.0, 2, 2, 1])),
         "grid differs from its label"),
        (lambda r: _resave(r / "imagesTr" / "syn_00000_0000.nii.gz", crop=True), "grid differs from its label"),
        (lambda r: (r / "imagesTr" / "syn_00000_0001.nii.gz").write_bytes(
            (r / "imagesTr" / "syn_00000_0000.nii.gz").read_bytes()), "channel 1 not declared"),
        (lambda r: (r / "labelsTr" / "notes.txt").write_text("x"), "not a .nii.gz file"),
    ],
)
def test_validator_finds_each_problem(tmp_path, breakage, expected):
    root = _write_valid(tmp_path / "ds")
    breakage(root)
    problems = validate_nnunet_dataset(root)
    assert any(expected in p for p in problems), problems


def _patch_json(root: Path, **kw) -> None:
    dj = json.loads((root / "dataset.json").read_text())
    dj.update(kw)
    (root / "dataset.json").write_text(json.dumps(dj))


def _resave(path: Path, affine=None, crop=False) -> None:
    img = nib.load(str(path))
    data = np.asarray(img.dataobj)
    if crop:
        data = data[:-1]
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine), str(path))


def test_validator_on_non_folder(tmp_path):
    assert validate_nnunet_dataset(tmp_path / "nope") == [f"{tmp_path / 'nope'}: not a folder"]


# ------------------------------------------------------------------------ CLI: classic


def test_augment_cli_classic_writes_valid_dataset_deterministically(cli, tmp_path):
    cohort = write_cohort(tmp_path / "cohort", n=2)
    args = ["augment", cohort, "--baseline", "classic", "--n", "3", "--include-real", "--seed", "4", "-q"]
    r1 = cli(*args, "--out", tmp_path / "a")
    assert r1.exit_code == 0, r1.output
    assert validate_nnunet_dataset(tmp_path / "a") == []
    dj = json.loads((tmp_path / "a" / "dataset.json").read_text())
    assert dj["numTraining"] == 5 and dj["labels"] == LABELS and dj["channel_names"] == {"0": "T1"}
    names = sorted(p.name for p in (tmp_path / "a" / "labelsTr").iterdir())
    assert names == ["aug_00000.nii.gz", "aug_00001.nii.gz", "aug_00002.nii.gz", "real_0000.nii.gz", "real_0001.nii.gz"]
    # no source case id ("pat00") anywhere in names or manifest
    assert "pat0" not in (tmp_path / "a" / "augment.json").read_text()
    man = json.loads((tmp_path / "a" / "augment.json").read_text())
    assert [c["source"] for c in man["cases"]] == [0, 1, 0, 0, 1]
    # real copies keep the real voxels and grid
    real = nib.load(str(tmp_path / "a" / "imagesTr" / "real_0001_0000.nii.gz"))
    src = nib.load(str(cohort / "imagesTr" / "pat01_0000.nii.gz"))
    assert np.array_equal(real.get_fdata(), src.get_fdata()) and np.allclose(real.affine, src.affine)
    r2 = cli(*args, "--out", tmp_path / "b")
    assert r2.exit_code == 0
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")
    r3 = cli(*args, "--out", tmp_path / "a")
    assert r3.exit_code == 2 and "already holds a dataset" in r3.output


def test_augment_cli_usage_errors(cli, tmp_path):
    cohort = write_cohort(tmp_path / "cohort", n=1)
    r = cli("augment", cohort, "--n", "2", "--out", tmp_path / "o")
    assert r.exit_code == 2 and "--model RUN is required" in r.output
    r = cli("augment", cohort, "--n", "2", "--out", tmp_path / "o", "--baseline", "fancy")
    assert r.exit_code == 2 and "'fancy' is not one of 'classic'" in r.output
    r = cli("augment", tmp_path / "missing", "--n", "2", "--out", tmp_path / "o", "--baseline", "classic")
    assert r.exit_code == 2 and "Traceback" not in r.output


# ------------------------------------------------------------------------ with a diffusion run


@pytest.fixture
def tiny_run(tmp_path):
    """A run folder with an untrained tiny denoiser (10 timesteps, 16^3): valid, fast, noisy."""
    from synthkit.config import (
        DataConfig,
        DiffusionConfig,
        PreprocessConfig,
        RunConfig,
        model_config,
    )
    from synthkit.networks import build_denoiser
    from synthkit.runtime.checkpoint import save_weights

    cfg = RunConfig(
        model=model_config("tiny", image_channels=1, mask_classes=2),
        diffusion=DiffusionConfig(timesteps=10),
        preprocess=PreprocessConfig(target_shape=(16, 16, 16), mask_labels=(1, 2)),
        data=DataConfig(channel_names=("T1",), labels=LABELS),
        preset="tiny",
    )
    run = tmp_path / "run"
    run.mkdir()
    cfg.save(run / "config.json")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = build_denoiser(cfg.model)
    save_weights(run / "model.safetensors", {k: v.contiguous() for k, v in model.state_dict().items()})
    return run


def test_augment_cli_with_model_writes_valid_dataset(cli, tmp_path, tiny_run):
    cohort = write_cohort(tmp_path / "cohort", n=2)
    args = ["augment", cohort, "--model", tiny_run, "--n", "3", "--include-real", "--sampler", "ddim",
            "--steps", "2", "--seed", "1", "--device", "cpu", "-q"]
    r = cli(*args, "--out", tmp_path / "syn")
    assert r.exit_code == 0, r.output
    root = tmp_path / "syn"
    assert validate_nnunet_dataset(root) == []
    dj = json.loads((root / "dataset.json").read_text())
    assert dj["numTraining"] == 5 and dj["labels"] == LABELS
    man = json.loads((root / "augment.json").read_text())
    syn = [c for c in man["cases"] if c["case"].startswith("syn_")]
    assert len(syn) == 3 and all(c["ops"] and c["ops"][0]["op"] == "move" for c in syn)
    assert man["model"]["weights_sha256"] and man["sampler"] == "ddim"
    # labels are the perturbed masks: same values as the source, tumour moved
    src = np.asarray(nib.load(str(cohort / "labelsTr" / "pat00.nii.gz")).dataobj)
    new = np.asarray(nib.load(str(root / "labelsTr" / "syn_00000.nii.gz")).dataobj)
    assert set(np.unique(new)) <= {0, 1, 2} and (new == 2).any()
    assert not np.array_equal(src, new)
    r2 = cli(*args, "--out", tmp_path / "syn2")
    assert r2.exit_code == 0
    assert tree_bytes(root) == tree_bytes(tmp_path / "syn2")


def test_augmented_dataset_feeds_segbench(cli, tmp_path):
    cohort = write_cohort(tmp_path / "cohort", n=2)
    assert cli("augment", cohort, "--baseline", "classic", "--n", "2", "--out", tmp_path / "aug", "-q").exit_code == 0
    r = cli("segbench", "--train", f"classic={tmp_path / 'aug'}", "--train", f"real={cohort}", "--test", cohort,
            "--epochs", "1", "--batch-size", "2", "--shape", "16", "16", "16", "--channels", "4", "--levels", "2",
            "--json", tmp_path / "r.json", "-q")
    assert r.exit_code == 0, r.output
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    assert [row["name"] for row in rows] == ["classic", "real"] and rows[0]["n_train"] == 2
