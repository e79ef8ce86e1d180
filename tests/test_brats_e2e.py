"""BraTS end to end: a BraTS-layout cohort (labels 0/1/2/4, no brain label in the files) ->
`synthkit train` the paper's way (--label-map '{"4": 3}' --brain-label 4) -> `synthkit sample`,
`augment` and `anonymize` with default flags -> every dataset passes nnU-Net v2's own integrity
check.

The check is nnU-Net v2's ``verify_dataset_integrity`` (what ``nnUNetv2_extract_fingerprint -d N
--verify_dataset_integrity`` runs before the fingerprint), called directly on the dataset folder
``$nnUNet_raw/DatasetNNN_Name``: the CLI entrypoint would also extract the fingerprint, which
takes ~30 s per dataset on 2 cores and checks nothing more. nnU-Net's paths point at tmp dirs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from phantoms import phantom

from synthkit.io import read_nifti, write_nifti

pytestmark = pytest.mark.slow  # ~50 s on 2 shared cores: a tiny training, five datasets, five nnU-Net checks

CASES = [f"BraTS20_Training_{i:03d}" for i in range(1, 6)]
MODALITIES = ("t1", "t1ce", "t2", "flair")
#: What a model trained the paper's way sees and synthkit writes: ET 4 -> 3, brain added as 4.
NETWORK_LABELS = {"background": 0, "necrotic core": 1, "edema": 2, "enhancing": 3, "brain": 4}


def _brats_cohort(root: Path) -> Path:
    """Skull-stripped 16^3 cases in the BraTS layout: images 0 outside the brain, seg with
    edema 2 around enhancing 4 around necrosis 1 and no label for the rest of the brain."""
    for n, case in enumerate(CASES):
        img, msk = phantom(16, seed=200 + n, channels=4)
        brain = msk.data[0] > 0
        tumour = msk.data[0] == 2
        centre = np.argwhere(tumour).mean(0)
        dist = np.sqrt(((np.indices(tumour.shape) - centre[:, None, None, None]) ** 2).sum(0))
        near = np.quantile(dist[tumour], [0.15, 0.5])  # the nearest 15% necrosis, the next 35% enhancing
        seg = np.zeros(tumour.shape, np.int16)
        seg[tumour] = 2
        seg[tumour & (dist <= near[1])] = 4
        seg[tumour & (dist <= near[0])] = 1
        assert {1, 2, 4} <= set(np.unique(seg).tolist())
        for c, mod in enumerate(MODALITIES):
            write_nifti(root / case / f"{case}_{mod}.nii.gz", np.where(brain, img.data[c] * 400, 0.0), img.affine)
        write_nifti(root / case / f"{case}_seg.nii.gz", seg, msk.affine, is_label=True)
    return root


@pytest.fixture(scope="module")
def brats(tmp_path_factory):
    """(tmp root, BraTS cohort, run trained through the CLI the paper's way, nnUNet_raw)."""
    from typer.testing import CliRunner

    from synthkit.cli.app import app

    tmp = tmp_path_factory.mktemp("brats")
    cohort = _brats_cohort(tmp / "brats")
    r = CliRunner().invoke(app, ["train", str(cohort), "--out", str(tmp / "run"), "--preset", "tiny",
                                 "--shape", "16", "16", "16", "--timesteps", "10", "--steps", "3", "--lr", "1e-3",
                                 "--checkpoint-every", "3", "--label-map", '{"4": 3}', "--brain-label", "4",
                                 "--quiet"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp / "run" / "config.json").read_text())
    assert cfg["preprocess"]["label_map"] == {"4": 3} and cfg["preprocess"]["brain_label"] == 4
    raw = tmp / "nnUNet_raw"
    raw.mkdir()
    return tmp, cohort, tmp / "run", raw


@pytest.fixture
def nnunet_check(brats, monkeypatch):
    """nnU-Net v2's verify_dataset_integrity on a dataset folder (raises when nnU-Net refuses it)."""
    tmp = brats[0]
    for var, sub in (("nnUNet_raw", "nnUNet_raw"), ("nnUNet_preprocessed", "nnUNet_preprocessed"),
                     ("nnUNet_results", "nnUNet_results")):
        (tmp / sub).mkdir(exist_ok=True)
        monkeypatch.setenv(var, str(tmp / sub))
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

    return lambda folder: verify_dataset_integrity(str(folder), num_processes=1)


def _labels_of(folder: Path) -> tuple[dict[str, int], set[int]]:
    """dataset.json labels and every value found in labelsTr."""
    found: set[int] = set()
    for p in sorted((folder / "labelsTr").glob("*.nii.gz")):
        found |= set(np.unique(read_nifti(p, is_label=True).data).tolist())
    return json.loads((folder / "dataset.json").read_text())["labels"], found


def test_nnunet_refuses_raw_brats_labels(brats, nnunet_check, tmp_path):
    """The control: the check does fail on what synthkit used to write (labels 0/1/2/4)."""
    from synthkit.io import write_nnunet_dataset_json

    _, cohort, _, raw = brats
    ds = raw / "Dataset009_RawBraTS"
    case = CASES[0]
    img, seg = read_nifti(cohort / case / f"{case}_t1.nii.gz"), read_nifti(cohort / case / f"{case}_seg.nii.gz",
                                                                             is_label=True)
    write_nifti(ds / "imagesTr" / "c0_0000.nii.gz", img.data, img.affine)
    write_nifti(ds / "labelsTr" / "c0.nii.gz", seg.data, seg.affine, is_label=True)
    write_nnunet_dataset_json(ds, ("T1",), {"background": 0, "necrotic core": 1, "edema": 2, "enhancing": 4}, 1)
    with pytest.raises(AssertionError, match="consecutive"):
        nnunet_check(ds)


def test_sample_with_default_flags_applies_the_runs_label_rules(brats, nnunet_check, cli):
    _, cohort, run, raw = brats
    out = raw / "Dataset001_SynthkitSample"
    r = cli("sample", cohort, "--model", run, "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    labels, found = _labels_of(out)
    assert labels == NETWORK_LABELS and found == {0, 1, 2, 3, 4}
    # each label file is its source mask under the run's rules: ET 4 -> 3, unlabelled brain -> 4
    for case in CASES:
        seg = read_nifti(cohort / case / f"{case}_seg.nii.gz", is_label=True).data[0]
        t1 = read_nifti(cohort / case / f"{case}_t1.nii.gz").data[0]
        lab = read_nifti(out / "labelsTr" / f"{case}_s0.nii.gz", is_label=True).data[0]
        for raw_value, written in ((1, 1), (2, 2), (4, 3)):
            assert np.array_equal(seg == raw_value, lab == written)
        assert np.array_equal(lab == 4, (seg == 0) & (t1 > 0))
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["items"]) == len(CASES) and not manifest["skipped"]
    assert all(e["background"] for e in manifest["items"])  # the brain label holds the background
    nnunet_check(out)


def test_augment_with_default_flags_and_the_classic_baseline(brats, nnunet_check, cli):
    _, cohort, run, raw = brats
    out = raw / "Dataset002_SynthkitAugment"
    r = cli("augment", cohort, "--model", run, "--out", out, "--n", "3", "--quiet")
    assert r.exit_code == 0, r.output
    labels, found = _labels_of(out)
    assert labels == NETWORK_LABELS and {0, 2, 4} <= found <= {0, 1, 2, 3, 4}
    nnunet_check(out)
    # no model: the cohort's own BraTS labels, renumbered 0/1/2/3 with their names
    classic = raw / "Dataset003_SynthkitClassic"
    r = cli("augment", cohort, "--baseline", "classic", "--out", classic, "--n", "2", "--include-real", "--quiet")
    assert r.exit_code == 0, r.output
    labels, found = _labels_of(classic)
    assert labels == {"background": 0, "necrotic core": 1, "edema": 2, "enhancing": 3} and 3 in found
    real = read_nifti(classic / "labelsTr" / "real_0000.nii.gz", is_label=True).data[0]
    seg = read_nifti(cohort / CASES[0] / f"{CASES[0]}_seg.nii.gz", is_label=True).data[0]
    assert np.array_equal(real == 3, seg == 4)
    nnunet_check(classic)


def test_anonymize_with_default_flags(brats, nnunet_check, cli):
    _, cohort, run, raw = brats
    out = raw / "Dataset004_SynthkitAnonymize"
    # default flags, but --no-features: the pretrained feature extractor adds ~35 s on 2 cores here
    # and plays no part in the labels (the memorization check still runs, on voxels and identity)
    r = cli("anonymize", cohort, "--model", run, "--out", out, "--no-features", "--quiet")
    assert r.exit_code == 0, r.output  # formerly every case failed: "no head/brain label"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["n_failed"] == 0 and manifest["settings"]["perturb_masks"] == "template"
    assert manifest["privacy"]["checked"]
    assert {c["status"] for c in manifest["cases"]} <= {"ok", "dropped"}
    ok = [c for c in manifest["cases"] if c["status"] == "ok"]
    assert ok, "every volume was dropped by the gate"
    labels, found = _labels_of(out)
    assert labels == NETWORK_LABELS and {0, 4} <= found <= {0, 1, 2, 3, 4}
    nnunet_check(out)
