"""`synthkit anonymize` end to end: a DICOM cohort full of identifiers in, nothing identifying out."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from synthkit.io import write_nifti, write_nnunet_dataset_json
from synthkit.io.demo_cohort import phantom
from synthkit.privacy import deid

NAME, PID, BIRTH = "DOE^JOHNATHAN", "PAT-ID-48213", "19610923"
INSTITUTION, REFERRER = "St. Example General Hospital", "HOUSE^GREGORY"
CASES = [f"{PID}-{s}" for s in ("A", "B", "C")]
NEEDLES = [NAME, "JOHNATHAN", PID, BIRTH, INSTITUTION, "Example General", REFERRER, "GREGORY", *CASES]


def _phantom_cohort(root: Path, seeds: range) -> Path:
    for i in seeds:
        img, msk = phantom(16, seed=i)
        write_nifti(root / "imagesTr" / f"case_{i:03d}_0000.nii.gz", img.data, img.affine)
        write_nifti(root / "labelsTr" / f"case_{i:03d}.nii.gz", msk.data, msk.affine, is_label=True)
    write_nnunet_dataset_json(root, ("T1",), {"background": 0, "head": 1, "tumour": 2}, len(seeds))
    return root


def _dicom_cohort(root: Path) -> Path:
    """DICOM series whose tags and folder names identify the patient; masks with the name in descrip."""
    import pydicom

    for n, cid in enumerate(CASES):
        img, msk = phantom(16, seed=50 + n)
        files = deid.write_dicom_series(root / "images" / cid, img.data[0] * 1000, img.affine,
                                        rng=np.random.default_rng(n))
        for f in files:
            ds = pydicom.dcmread(f)
            ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PID, BIRTH
            ds.InstitutionName, ds.ReferringPhysicianName = INSTITUTION, REFERRER
            ds.PatientIdentityRemoved = "NO"
            ds.save_as(f)
        m = nib.Nifti1Image(msk.data[0].astype(np.uint8), img.affine)
        m.header["descrip"] = NAME.encode()
        (root / "masks").mkdir(parents=True, exist_ok=True)
        nib.save(m, str(root / "masks" / f"{cid}.nii.gz"))
    write_nnunet_dataset_json(root, ("MR",), {"background": 0, "head": 1, "tumour": 2}, len(CASES))
    return root


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from synthkit.config import (
        DiffusionConfig,
        PreprocessConfig,
        RunConfig,
        TrainConfig,
        model_config,
    )
    from synthkit.training import train

    root = tmp_path_factory.mktemp("anon")
    train_dir = _phantom_cohort(root / "train", range(5))
    cfg = RunConfig(model=model_config("tiny"), diffusion=DiffusionConfig(timesteps=10),
                    preprocess=PreprocessConfig(target_shape=(16, 16, 16)),
                    train=TrainConfig(steps=5, batch_size=2, lr=1e-3, checkpoint_every=5, seed=0), preset="tiny")
    run = train(train_dir, root / "run", cfg, progress=False)
    return root, train_dir, Path(run), _dicom_cohort(root / "dicom_in")


def _args(world, out, *extra):
    _root, train_dir, run, cohort = world
    return ["anonymize", cohort, "--model", run, "--out", out, "--train-cohort", train_dir, "--sampler", "ddim",
            "--steps", "2", "--shape", "16", "--seed", "5", "--quiet", *extra]


def test_anonymize_dicom_cohort_leaves_no_identifier(cli, world, tmp_path):
    _root, _, _run, cohort = world
    assert deid.scan_for_identifiers(cohort, [NAME, PID]), "the input must carry the identifiers"
    out, mapping = tmp_path / "out", tmp_path / "private" / "map.json"
    res = cli(*_args(world, out, "--dicom", "--mapping", mapping))
    assert res.exit_code == 0, res.output
    assert deid.scan_for_identifiers(out, NEEDLES) == []
    images = sorted((out / "imagesTr").glob("*.nii.gz"))
    labels = sorted((out / "labelsTr").glob("*.nii.gz"))
    assert len(images) == 3 and len(labels) == 3
    for p in images + labels:
        assert p.name.startswith("syn_") and deid.nifti_header_problems(p) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["model"]["weights_sha256"]) == 64
    assert [c["id"] for c in manifest["cases"]] == sorted(c["id"] for c in manifest["cases"])
    assert all(c["status"] == "ok" and isinstance(c["seed"], int) and "similarity" in c["privacy"]
               for c in manifest["cases"])
    assert manifest["privacy"]["checked"] and manifest["privacy"]["calibration"]["thresholds"]["similarity"]
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 3
    assert (out / "privacy_report.html").is_file()
    # training case ids never appear either
    assert deid.scan_for_identifiers(out, ["case_000", "case_001", "case_002"]) == []
    import pydicom

    dcm = sorted((out / "dicom").rglob("*.dcm"))
    assert len(dcm) == 3 * 16
    ds = pydicom.dcmread(dcm[0])
    assert ds.PatientIdentityRemoved == "YES" and ds.PatientName == ""
    pairs = json.loads(mapping.read_text())["mapping"]
    assert sorted(pairs) == CASES and {p.name for p in images} == {f"{v}_0000.nii.gz" for v in pairs.values()}


def test_training_cohort_recorded_with_the_run_is_used(cli, world, tmp_path):
    _, train_dir, run, cohort = world
    assert json.loads((run / "train_cohort.json").read_text())["path"] == str(train_dir.resolve())
    out = tmp_path / "out"
    res = cli("anonymize", cohort, "--model", run, "--out", out, "--sampler", "ddim", "--steps", "1",
              "--shape", "16", "--quiet")
    assert res.exit_code == 0, res.output
    assert json.loads((out / "manifest.json").read_text())["privacy"]["checked"]


def test_resume_keeps_done_outputs_and_regenerates_missing(cli, world, tmp_path):
    out = tmp_path / "out"
    assert cli(*_args(world, out)).exit_code == 0
    images = sorted((out / "imagesTr").glob("*.nii.gz"))
    before = {p.name: p.read_bytes() for p in images}
    stat = {p.name: p.stat().st_mtime_ns for p in images}
    images[1].unlink()
    res = cli(*_args(world, out)[:-1])  # not quiet: notes are printed
    assert res.exit_code == 0, res.output
    assert "2 volume(s) were already done" in res.output
    after = {p.name: p.read_bytes() for p in sorted((out / "imagesTr").glob("*.nii.gz"))}
    assert after == before  # regenerated bit for bit
    assert (out / "imagesTr" / images[0].name).stat().st_mtime_ns == stat[images[0].name]
    res = cli(*_args(world, out, "--per-case", "2"))
    assert res.exit_code == 2 and "other settings" in res.output


def test_one_failing_case_does_not_lose_the_others(cli, world, tmp_path):
    import shutil

    _root, _, _, cohort = world
    bad = tmp_path / "cohort"
    shutil.copytree(cohort, bad)
    (bad / "masks" / f"{CASES[1]}.nii.gz").write_bytes(b"not a nifti")
    args = _args(world, tmp_path / "out")
    args[1] = bad
    res = cli(*args)
    assert res.exit_code == 1
    assert "1 case(s) failed" in res.output
    assert len(list((tmp_path / "out" / "imagesTr").glob("*.nii.gz"))) == 2
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["n_failed"] == 1


def test_usage_errors(cli, world, tmp_path):
    _root, train_dir, run, cohort = world
    out = tmp_path / "out"
    res = cli(*_args(world, out, "--mapping", out / "map.json"))
    assert res.exit_code == 2 and "outside" in res.output
    import shutil

    bare = tmp_path / "run_without_record"
    shutil.copytree(run, bare)
    (bare / "train_cohort.json").unlink()
    res = cli("anonymize", cohort, "--model", bare, "--out", out, "--quiet")
    assert res.exit_code == 2 and "--train-cohort" in res.output
    res = cli("anonymize", cohort, "--model", run, "--out", cohort / "x", "--train-cohort", train_dir)
    assert res.exit_code == 2 and "outside the input" in res.output


class _CopyingPipeline:
    """Stands in for a model that memorised: returns a training image for the first ``n_copies``
    volumes it samples (a Pipeline's prepare / sample_batch / to_volume, on the mask's grid)."""

    device = "cpu"

    def __init__(self, n_copies: int):
        self.n_copies, self.calls = n_copies, 0

    def prepare(self, mask, label_space="raw"):
        import torch

        from synthkit.pipeline.pipeline import Prepared

        return Prepared(torch.zeros(2, 4, 4, 4), mask, True)

    def sample_batch(self, cond, seeds, **kw):
        import torch

        out = []
        for seed in seeds:
            self.calls += 1
            img, _ = phantom(16, seed=1 if self.calls <= self.n_copies else 90 + self.calls)
            rng = np.random.default_rng(seed % 2**32)
            out.append(torch.from_numpy(img.data + rng.normal(0, 0.01, img.data.shape).astype(np.float32)))
        return torch.stack(out)

    def to_volume(self, x, record):
        from synthkit.io.volume import Volume

        return Volume(x.numpy(), record.affine)


@pytest.mark.parametrize("n_copies, status, attempts", [(1, "ok", 2), (10, "dropped", 3)])
def test_privacy_gate_regenerates_then_drops(world, tmp_path, n_copies, status, attempts):
    from synthkit.io import discover_cohort
    from synthkit.pipeline.engine import Engine, Job, Sampling
    from synthkit.pipeline.seeds import seed_for
    from synthkit.privacy.anonymize import AnonymizeSettings, _gate, _writer
    from synthkit.privacy.audit import load_set
    from synthkit.privacy.check import CheckSettings, MemorizationChecker

    _, train_dir, _, cohort_dir = world
    check = CheckSettings(shape=(16,) * 3, use_features=False)
    checker = MemorizationChecker(load_set(train_dir, "training", check, None, errors=[]), None, check)
    cohort = discover_cohort(cohort_dir, need_images=False)
    s = AnonymizeSettings(max_retries=2, check=check)
    entries = []
    engine = Engine(_CopyingPipeline(n_copies), Sampling(), seed=lambda job, a: seed_for(s.seed, job.key, a),
                    gate=_gate(checker, s), max_retries=s.max_retries, batch_size=1)
    _, write = _writer(tmp_path, s, ("MR",), 1)
    res = engine.run([Job("syn_0123456789ab", cohort.cases[0])], lambda made: entries.append(write(made)))
    (entry,) = entries
    assert entry["status"] == status and len(entry["attempts"]) == attempts
    assert entry["attempts"][0]["flagged"]
    assert [a["seed"] for a in entry["attempts"]] == [seed_for(s.seed, "syn_0123456789ab", a) for a in range(attempts)]
    assert res.batches == attempts and (res.dropped == []) == (status == "ok")
    assert "nearest" not in json.dumps(entry)
    written = list(tmp_path.rglob("*.nii.gz"))
    assert (len(written) == 2) == (status == "ok")


def test_self_check_needles_come_from_tags_names_and_headers(world):
    from synthkit.io import discover_cohort
    from synthkit.privacy.anonymize import identifier_needles

    needles = identifier_needles(discover_cohort(world[3], need_images=False))
    for s in (NAME, "DOE JOHNATHAN", PID, BIRTH, INSTITUTION, REFERRER, *CASES):
        assert s in needles
    assert all(len(n) >= 5 for n in needles)


@pytest.mark.parametrize(("extra", "perturbed"), [((), True), (("--perturb-masks", "move"), True),
                                                 (("--perturb-masks", "none"), False)])
def test_masks_are_warped_by_default_and_go_through_the_scrubber(cli, world, tmp_path, extra, perturbed):
    _, _, _, cohort = world
    out, mapping = tmp_path / "out", tmp_path / "map.json"
    res = cli(*_args(world, out, *extra, "--mapping", mapping))
    assert res.exit_code == 0, res.output
    pairs = json.loads(mapping.read_text())["mapping"]
    changed = 0
    for cid, oid in pairs.items():
        a = np.asarray(nib.load(str(cohort / "masks" / f"{cid}.nii.gz")).dataobj)
        p = out / "labelsTr" / f"{oid}.nii.gz"
        b = np.asarray(nib.load(str(p)).dataobj)
        assert a.shape == b.shape and deid.nifti_header_problems(p) == []
        changed += int((a != b).sum() > 0)
    assert changed == (len(pairs) if perturbed else 0)
    entries = json.loads((out / "manifest.json").read_text())["cases"]
    assert {e["perturbed_mask"] for e in entries} == {perturbed}
    assert deid.scan_for_identifiers(out, NEEDLES) == []


def test_unknown_mask_operation_is_refused_before_any_case(cli, world, tmp_path):
    out = tmp_path / "out"
    res = cli(*_args(world, out, "--perturb-masks", "wobble"))
    assert res.exit_code == 2
    assert "wobble" in res.output and "Traceback" not in res.output
    assert not (out / "imagesTr").exists()
