"""`synthkit anonymize` end to end: a DICOM cohort full of identifiers in, nothing identifying out."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from phantoms import phantom

from synthkit.io import write_nifti, write_nnunet_dataset_json
from synthkit.privacy.deid import dicom_export, identifiers, outputs

NAME, PID, BIRTH = "DOE^JOHNATHAN", "PAT-ID-48213", "19610923"
INSTITUTION, REFERRER = "St. Example General Hospital", "HOUSE^GREGORY"
SHORT_ID = "0042"  # a 4-character id, only in the LAST file of each series (the old scan read the first)
CASES = [f"{PID}-{s}" for s in ("A", "B", "C")]
NEEDLES = [NAME, "JOHNATHAN", PID, BIRTH, INSTITUTION, "Example General", REFERRER, "GREGORY", SHORT_ID, *CASES]


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
        files = dicom_export.write_dicom_series(root / "images" / cid, img.data[0] * 1000, img.affine,
                                        rng=np.random.default_rng(n))
        for f in files:
            ds = pydicom.dcmread(f)
            ds.PatientName, ds.PatientID, ds.PatientBirthDate = NAME, PID, BIRTH
            ds.InstitutionName, ds.ReferringPhysicianName = INSTITUTION, REFERRER
            ds.PatientIdentityRemoved = "NO"
            if f == files[-1]:
                ds.AdmissionID = SHORT_ID
            ds.save_as(f)
        m = nib.Nifti1Image(msk.data[0].astype(np.uint8), img.affine)
        m.header["descrip"] = NAME.encode()
        (root / "masks").mkdir(parents=True, exist_ok=True)
        nib.save(m, str(root / "masks" / f"{cid}.nii.gz"))
    write_nnunet_dataset_json(root, ("MR",), {"background": 0, "head": 1, "tumour": 2}, len(CASES))
    return root


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test its own synthkit cache: nothing computed in one test is reused by another."""
    monkeypatch.setenv("SYNTHKIT_CACHE_DIR", str(tmp_path / "synthkit_cache"))


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
    assert identifiers.scan_for_identifiers(cohort, [NAME, PID]), "the input must carry the identifiers"
    out, mapping = tmp_path / "out", tmp_path / "private" / "map.json"
    res = cli(*_args(world, out, "--dicom", "--mapping", mapping))
    assert res.exit_code == 0, res.output
    assert identifiers.scan_for_identifiers(out, NEEDLES) == []
    images = sorted((out / "imagesTr").glob("*.nii.gz"))
    labels = sorted((out / "labelsTr").glob("*.nii.gz"))
    assert len(images) == 3 and len(labels) == 3
    for p in images + labels:
        assert p.name.startswith("syn_") and outputs.nifti_header_problems(p) == []
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["model"]["weights_sha256"]) == 64
    assert [c["id"] for c in manifest["cases"]] == sorted(c["id"] for c in manifest["cases"])
    assert all(c["status"] == "ok" and isinstance(c["seed"], int) and "similarity" in c["privacy"]
               for c in manifest["cases"])
    assert manifest["privacy"]["checked"] and manifest["privacy"]["calibration"]["thresholds"]["similarity"]
    assert json.loads((out / "dataset.json").read_text())["numTraining"] == 3
    assert (out / "privacy_report.html").is_file()
    # training case ids never appear either
    assert identifiers.scan_for_identifiers(out, ["case_000", "case_001", "case_002"]) == []
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
    """A readable file that cannot be used (a 2-D mask) fails its case only."""
    import shutil

    _root, _, _, cohort = world
    bad = tmp_path / "cohort"
    shutil.copytree(cohort, bad)
    nib.save(nib.Nifti1Image(np.ones((16, 16), np.uint8), np.eye(4)), str(bad / "masks" / f"{CASES[1]}.nii.gz"))
    args = _args(world, tmp_path / "out")
    args[1] = bad
    res = cli(*args)
    assert res.exit_code == 1
    assert "1 case(s) failed" in res.output
    assert len(list((tmp_path / "out" / "imagesTr").glob("*.nii.gz"))) == 2
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["n_failed"] == 1


def test_unreadable_input_file_stops_the_run_before_anything_is_written(cli, world, tmp_path):
    """The identifier scan fails closed: a NIfTI whose header cannot be read is named in one
    stderr line, the exit code is non-zero and no output folder is made."""
    import shutil

    _root, _, _, cohort = world
    bad = tmp_path / "cohort"
    shutil.copytree(cohort, bad)
    broken = bad / "masks" / f"{CASES[1]}.nii.gz"
    broken.write_bytes(b"not a nifti")
    args = _args(world, tmp_path / "out")
    args[1] = bad
    res = cli(*args)
    assert res.exit_code != 0 and "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and str(broken) in lines[0] and "identifiers" in lines[0], res.output
    assert not (tmp_path / "out").exists()


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

    def to_network_mask(self, mask, **kw):  # masks labelled as the model's
        return mask

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
            out.append(torch.from_numpy(img.data + rng.normal(0, 0.001, img.data.shape).astype(np.float32)))
        return torch.stack(out)

    def to_volume(self, x, record):
        from synthkit.io.volume import Volume

        return Volume(x.numpy(), record.affine)


@pytest.mark.parametrize("n_copies, rules, status, attempts", [
    (1, None, "ok", 2),
    (10, ("similarity", "identity"), "dropped", 3),  # copies with their own mask: max_retries=2, then dropped
    (10, None, "dropped", 2),  # the head outline flagged two seeds in a row: no third attempt
])
def test_privacy_gate_regenerates_then_drops(world, tmp_path, n_copies, rules, status, attempts):
    from synthkit.io import discover_cohort
    from synthkit.jobs.anonymize import AnonymizeSettings, _writer
    from synthkit.pipeline.engine import Engine, Job, Sampling
    from synthkit.pipeline.seeds import seed_for
    from synthkit.privacy.audit.check import CheckSettings
    from synthkit.privacy.gate import make_gate, prepare_reference

    _, train_dir, _, cohort_dir = world
    check = CheckSettings(shape=(16,) * 3, use_features=False, **({"rules": rules} if rules else {}))
    ref = prepare_reference(train_dir, check)
    cohort = discover_cohort(train_dir if rules else cohort_dir, need_images=False)
    case = cohort.cases[1] if rules else cohort.cases[0]  # training case 1 is what the stand-in copies
    s = AnonymizeSettings(max_retries=2, check=check)
    entries = []
    engine = Engine(_CopyingPipeline(n_copies), Sampling(), seed=lambda job, a: seed_for(s.seed, job.key, a),
                    gate=make_gate(ref, {}, linkage=True), max_retries=s.max_retries, batch_size=1)
    _, write = _writer(tmp_path, s, ("MR",), 1, {"background": 0, "head": 1, "tumour": 2})
    res = engine.run([Job("syn_0123456789ab", case)], lambda made: entries.append(write(made)))
    (entry,) = entries
    assert entry["status"] == status and len(entry["attempts"]) == attempts
    assert entry["attempts"][0]["flagged"]
    assert [a["seed"] for a in entry["attempts"]] == [seed_for(s.seed, "syn_0123456789ab", a) for a in range(attempts)]
    assert res.batches == attempts and (res.dropped == []) == (status == "ok")
    assert ("retry" in entry["attempts"][-1]) == (rules is None and status == "dropped")
    assert "nearest" not in json.dumps(entry)
    written = list(tmp_path.rglob("*.nii.gz"))
    assert (len(written) == 2) == (status == "ok")


def test_self_check_needles_come_from_tags_names_and_headers(world):
    from synthkit.io import discover_cohort
    from synthkit.jobs.anonymize import identifier_needles

    needles = identifier_needles(discover_cohort(world[3], need_images=False))
    for s in (NAME, "DOE JOHNATHAN", PID, BIRTH, INSTITUTION, REFERRER, SHORT_ID, *CASES):
        assert s in needles


def test_identifier_scan_fails_closed_naming_the_file(world, tmp_path):
    import shutil

    from synthkit.io import discover_cohort
    from synthkit.privacy.deid.identifiers import IdentifierScanError, identifier_needles

    bad = tmp_path / "cohort"
    shutil.copytree(world[3], bad)
    broken = bad / "masks" / f"{CASES[0]}.nii.gz"
    broken.write_bytes(b"\x1f\x8b not a gzip stream")
    with pytest.raises(IdentifierScanError, match="cannot read the NIfTI header") as e:
        identifier_needles(discover_cohort(bad, need_images=False))
    assert str(broken) in str(e.value) and "\n" not in str(e.value)


def test_self_check_fails_the_run_when_a_short_id_reaches_the_output(cli, world, tmp_path, monkeypatch):
    """The final scan is the complete one: a 4-digit id planted in the last file of each input
    series, were it to reach an output path, fails the run (exit 1, one line)."""
    ids = [f"syn_{i:02d}_{SHORT_ID}" for i in range(3)]  # as a whole token in every output file name
    monkeypatch.setattr(outputs, "fresh_case_ids", lambda n, rng, **kw: ids[:n])
    res = cli(*_args(world, tmp_path / "out"))
    assert res.exit_code == 1
    assert "self-check found" in res.output and "do not share it" in res.output and "Traceback" not in res.output
    assert identifiers.scan_for_identifiers(tmp_path / "out", [SHORT_ID])  # it is there: the check was right


@pytest.mark.parametrize(("extra", "perturbed"), [((), True), (("--perturb-masks", "move"), True),
                                                 (("--perturb-masks", "none"), False)])
def test_masks_are_perturbed_by_default_and_go_through_the_scrubber(cli, world, tmp_path, extra, perturbed):
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
        assert a.shape == b.shape and outputs.nifti_header_problems(p) == []
        changed += int((a != b).sum() > 0)
    assert changed == (len(pairs) if perturbed else 0)
    manifest = json.loads((out / "manifest.json").read_text())
    assert {e["perturbed_mask"] for e in manifest["cases"]} == {perturbed}
    if not extra:  # the default: the patient's tumour in a pool head (benchmarks/results/mask_privacy.md)
        assert manifest["settings"]["perturb_masks"] == "template"
    assert identifiers.scan_for_identifiers(out, NEEDLES) == []


def test_unknown_mask_operation_is_refused_before_any_case(cli, world, tmp_path):
    out = tmp_path / "out"
    res = cli(*_args(world, out, "--perturb-masks", "wobble"))
    assert res.exit_code == 2
    assert "wobble" in res.output and "Traceback" not in res.output
    assert not (out / "imagesTr").exists()
    res = cli(*_args(world, out, "--perturb-masks", "deform", "--template-heads", tmp_path))  # a pool, no template
    assert res.exit_code == 2 and "--perturb-masks template" in res.output and "Traceback" not in res.output
    (tmp_path / "empty").mkdir()
    res = cli(*_args(world, out, "--template-heads", tmp_path / "empty"))  # the default template, an empty pool
    assert res.exit_code == 2 and "no NIfTI head masks" in res.output and "Traceback" not in res.output
    res = cli(*_args(world, out, "--perturb-masks", "template", "--template-heads", tmp_path / "nope"))
    assert res.exit_code == 2 and "folder" in res.output
    assert not (out / "imagesTr").exists()


def _oblique_masks(root: Path) -> Path:
    """Masks on a scanner-like geometry: oblique (10 degrees), off-centre, 1.4999 mm voxels."""
    theta = np.deg2rad(10)
    rot = np.array([[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([1.4999, 1.4999, 1.5001])
    aff[:3, 3] = [-31.7, 12.25, 88.0]
    for i in range(2):
        _, m = phantom(16, seed=60 + i)
        write_nifti(root / "masks" / f"subject_{i}.nii.gz", m.data, aff, is_label=True)
    write_nnunet_dataset_json(root, ("T1",), {"background": 0, "head": 1, "tumour": 2}, 2)
    return root


@pytest.mark.parametrize("keep", [False, True])
def test_output_geometry_is_canonical_unless_keep_geometry(cli, world, tmp_path, keep):
    src = _oblique_masks(tmp_path / "in")
    out, mapping = tmp_path / "out", tmp_path / "map.json"
    args = _args(world, out, "--mapping", mapping, *(["--keep-geometry"] if keep else []))
    args[1] = src
    res = cli(*args)
    assert res.exit_code == 0, res.output
    pairs = json.loads(mapping.read_text())["mapping"]
    assert len(pairs) == 2
    for cid, oid in pairs.items():
        source = nib.load(str(src / "masks" / f"{cid}.nii.gz"))
        want = source.affine if keep else outputs.canonical_affine(source.affine, source.shape)
        for p in (out / "imagesTr" / f"{oid}_0000.nii.gz", out / "labelsTr" / f"{oid}.nii.gz"):
            img = nib.load(str(p))
            assert img.shape == source.shape
            np.testing.assert_allclose(img.affine, want, atol=1e-4)
            # the default drops the obliquity, the scanner position and the exact voxel size
            assert np.allclose(img.affine, source.affine, atol=1e-3) == keep
        if not keep:
            assert np.allclose(img.affine[:3, :3], np.diag([1.5, 1.5, 1.5]))
    assert json.loads((out / "manifest.json").read_text())["settings"]["keep_geometry"] is keep


@pytest.mark.parametrize("pool", ["demo", "dir"])
def test_template_masks_keep_the_tumour_in_a_head_that_is_not_the_patients(cli, world, tmp_path, pool):
    """--perturb-masks template through the engine's perturbation step: the output mask's head
    comes from the pool (demo heads, or --template-heads DIR), its tumour from the patient."""
    _, _, _, cohort = world
    out, mapping = tmp_path / "out", tmp_path / "map.json"
    extra = ["--perturb-masks", "template"]
    if pool == "dir":
        heads = tmp_path / "pool_site_A"
        for i in range(3):
            _, m = phantom(16, seed=300 + i)
            write_nifti(heads / f"volunteer_{i}.nii.gz", (m.data > 0).astype(np.int16), m.affine, is_label=True)
        extra += ["--template-heads", heads]
    res = cli(*_args(world, out, *extra, "--mapping", mapping))
    assert res.exit_code == 0, res.output
    for cid, oid in json.loads(mapping.read_text())["mapping"].items():
        src = np.asarray(nib.load(str(cohort / "masks" / f"{cid}.nii.gz")).dataobj)
        new = np.asarray(nib.load(str(out / "labelsTr" / f"{oid}.nii.gz")).dataobj)
        assert set(np.unique(new)) == {0, 1, 2}
        a, b = src > 0, new > 0
        dice = 2 * (a & b).sum() / (a.sum() + b.sum())
        assert dice < 0.95, dice  # not the patient's head outline (0.87-0.92 here; the patient's own: 1)
        assert 0.5 < (new == 2).sum() / (src == 2).sum() < 2.0  # the patient's tumour, slightly rescaled
    recorded = json.loads((out / "manifest.json").read_text())["settings"]["perturb_masks"]
    if pool == "dir":
        assert recorded.startswith("template:heads=dir:") and "pool_site_A" not in (out / "manifest.json").read_text()
    else:
        assert recorded == "template"


def _in_source_mask(case, seed):
    """A volume that is not a copy of any training image (a fresh phantom's texture) made for
    ``case``'s mask: background held outside its head, as the model does."""
    from synthkit.io import read_mask
    from synthkit.io.volume import Volume

    mask = read_mask(case)
    img, _ = phantom(16, seed=seed)
    data = img.data.copy()
    data[:, mask.data[0] == 0] = data.min()
    return Volume(data, mask.affine), mask


def test_linkage_gate_flags_a_volume_whose_own_source_is_the_top_match(world):
    """Training subjects as input: the gate ranks the training subjects for each volume (its own
    source known by mask content), flags it when the source is the top match even though the
    copy rule does not, and keeps only ranks and booleans."""
    from synthkit.io import discover_cohort
    from synthkit.pipeline.engine import Job
    from synthkit.privacy.audit.check import CheckSettings
    from synthkit.privacy.gate import make_gate, prepare_reference, source_columns

    _, train_dir, _, dicom_in = world
    # phantoms share one tissue pattern, so a fresh phantom in a subject's own mask is close to a copy of
    # it: a strict rate keeps the copy rule quiet here, where the linkage gate is under test
    ref = prepare_reference(train_dir, CheckSettings(shape=(16,) * 3, use_features=False, rules=("similarity",),
                                                     alpha=1e-3))
    train = discover_cohort(train_dir)
    sources = source_columns(train, ref)
    assert sources == {c.case_id: ref.checker.train.ids.index(c.case_id) for c in train.cases}
    assert source_columns(discover_cohort(dicom_in, need_images=False), ref) == {}  # not training subjects
    on, off = make_gate(ref, sources, linkage=True), make_gate(ref, sources, linkage=False)
    retried = 0
    for i, case in enumerate(train.cases):
        job = Job(f"syn_{i:012d}", case)
        vol, mask = _in_source_mask(case, 90 + i)
        rec, plain = on(job, vol, mask), off(job, vol, mask)
        assert not rec["copy_flag"] and not plain["flagged"]
        assert set(rec["source_rank"]) == {"identity", "shape_dice", "image"}
        assert rec["reidentified"] == (min(rec["source_rank"].values()) == 1) == plain["reidentified"]
        assert rec["flagged"] == rec["reidentified"]
        assert "re-identified" in rec["reason"]
        assert not any(isinstance(v, str) and v.startswith("case_") for v in rec.values())
        again = on(job, vol, mask)  # the same head outline flags a second seed: no more retries
        retried += again.get("retry", True) is False
        assert (again.get("retry", True) is False) == (rec["source_rank"]["shape_dice"] == 1)
    assert sum(1 for c in train.cases) == 5 and retried >= 1
    unknown = make_gate(ref, {}, linkage=True)(Job("syn_x", train.cases[0]), *_in_source_mask(train.cases[0], 90))
    assert "source_rank" not in unknown and not unknown["flagged"]


def _training_args(world, out, *extra):
    args = _args(world, out, "--perturb-masks", "none", "--no-features", *extra)
    args[1] = world[1]  # the model's own training cohort as the input: the attacker's worst case
    return args


def test_anonymize_of_training_subjects_reports_the_attack_and_drops_reidentified(cli, world, tmp_path):
    out = tmp_path / "out"
    res = cli(*_training_args(world, out))
    assert res.exit_code == 0, res.output
    man = json.loads((out / "manifest.json").read_text())
    priv = man["privacy"]
    assert priv["gate_linkage"] is True and priv["inputs_in_training"] == 5
    before = priv["attacks"]["linkage_before_gate"]
    assert before["n_linked"] == 5 and set(before["statistics"]) == {"identity", "shape_dice", "image"}
    best = before["best"]["top1"]
    assert best["chance"] == 0.2 and best["rate"] >= 0.8 and best["p_value"] < 0.01
    for c in man["cases"]:
        first, last = c["attempts"][0], c["attempts"][-1]
        assert isinstance(first["reidentified"], bool) and set(first["source_rank"]) == set(before["statistics"])
        assert c["status"] == ("dropped" if last["flagged"] else "ok")
        assert last["flagged"] == (last["copy_flag"] or last["reidentified"])
    shared = priv["attacks"]["linkage"]
    assert shared["n_synthetic"] == sum(c["status"] == "ok" for c in man["cases"])
    assert shared["n_linked"] == shared["n_synthetic"]
    assert any(c["status"] == "dropped" for c in man["cases"])
    assert any("needs a holdout set (--holdout DIR" in n for n in priv["not_computed"])
    html = (out / "privacy_report.html").read_text()
    assert "Re-identification attack: the first attempt of every volume, before the gate" in html
    assert "dropped by the gate" in html and "--holdout" in html
    train_ids = [f"case_{i:03d}" for i in range(5)]
    assert identifiers.scan_for_identifiers(out, train_ids) == []  # ranks and booleans only
    # the gate off: everything is written, and the attack is reported on what is shared
    res = cli(*_training_args(world, tmp_path / "open", "--no-privacy-gate"))
    assert res.exit_code == 0, res.output
    man = json.loads((tmp_path / "open" / "manifest.json").read_text())
    assert all(c["status"] == "ok" for c in man["cases"])
    link = man["privacy"]["attacks"]["linkage"]
    assert link["n_linked"] == 5 and link["best"]["top1"]["rate"] >= 0.8
    assert identifiers.scan_for_identifiers(tmp_path / "open", train_ids) == []
    # --no-gate-linkage: the attack is still reported; only the copy rule gates
    res = cli(*_training_args(world, tmp_path / "nolink", "--no-gate-linkage"))
    assert res.exit_code == 0, res.output
    man = json.loads((tmp_path / "nolink" / "manifest.json").read_text())
    assert man["privacy"]["gate_linkage"] is False and "linkage_before_gate" in man["privacy"]["attacks"]
    assert all(c["attempts"][-1]["flagged"] == c["attempts"][-1]["copy_flag"] for c in man["cases"])


def test_holdout_adds_membership_inference_and_calibrates_the_flag(cli, world, tmp_path):
    holdout = _phantom_cohort(tmp_path / "holdout", range(20, 24))
    out = tmp_path / "out"
    res = cli(*_args(world, out, "--holdout", holdout, "--no-features"))
    assert res.exit_code == 0, res.output
    priv = json.loads((out / "manifest.json").read_text())["privacy"]
    mem = priv["attacks"]["membership"]
    assert mem["n_members"] == 5 and mem["n_nonmembers"] == 4 and 0 <= mem["auc"] <= 1
    assert mem["ci"][0] <= mem["auc"] <= mem["ci"][1] and mem["n_unusable_cases"] == 0
    assert priv["reference"] == "training cohort, calibrated holdout-to-train"
    assert not any("needs a holdout" in n for n in priv["not_computed"])
    assert any("re-identification attack: no input case" in n for n in priv["not_computed"])
    html = (out / "privacy_report.html").read_text()
    assert "Membership-inference attack" in html
    assert identifiers.scan_for_identifiers(out, [f"case_{i:03d}" for i in [*range(5), *range(20, 24)]]) == []
    res = cli(*_args(world, tmp_path / "out2", "--holdout", tmp_path / "missing"))
    assert res.exit_code == 2 and "--holdout" in res.output and "Traceback" not in res.output


def test_training_side_is_cached_by_content_and_a_hit_decides_identically(cli, world, tmp_path):
    """The second run reads the training side from the cache (named by hashes only, no case id
    inside) and makes exactly the same privacy records and calibration as the first."""
    import re

    _root, train_dir, _run, _cohort = world
    first = cli(*_args(world, tmp_path / "a")[:-1])
    assert first.exit_code == 0, first.output
    assert "read from the cache" not in first.output
    second = cli(*_args(world, tmp_path / "b")[:-1])
    assert second.exit_code == 0, second.output
    assert "training side read from the cache" in second.output
    a, b = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("a", "b"))
    assert a["privacy"]["calibration"] == b["privacy"]["calibration"]
    assert [c["attempts"] for c in a["cases"]] == [c["attempts"] for c in b["cases"]]
    everything = sorted((tmp_path / "synthkit_cache" / "privacy").iterdir())
    files = [f for f in everything if ".calibration-" not in f.name]
    assert [f.suffix for f in files] == [".json", ".safetensors"]
    assert all(re.fullmatch(r"[0-9a-f]{32}", f.stem) for f in files)
    # the calibration with its planted-copy self-test, beside the entry (the second run read it)
    calib = [f for f in everything if ".calibration-" in f.name]
    assert len(calib) == 1 and re.fullmatch(files[0].stem + r"\.calibration-[0-9a-f]{16}\.json", calib[0].name)
    assert json.loads(calib[0].read_text()) == b["privacy"]["calibration"]
    text = files[0].read_text() + files[1].read_bytes()[:4096].decode("latin-1") + calib[0].read_text()
    for case in (p.name.split(".")[0] for p in (train_dir / "labelsTr").iterdir()):
        assert case not in text
    # a changed training file (or another check setting) gives another key, never a stale hit
    import shutil

    from synthkit.io import discover_cohort
    from synthkit.privacy.audit.check import CheckSettings
    from synthkit.privacy.audit.reference_cache import cohort_key

    moved = tmp_path / "train2"
    shutil.copytree(train_dir, moved)
    check = CheckSettings(shape=(16,) * 3)
    key = cohort_key([discover_cohort(moved)], check, "features")
    assert key == cohort_key([discover_cohort(train_dir)], check, "features")  # contents, not paths
    img = min((moved / "imagesTr").iterdir())
    data = nib.load(str(img))
    nib.save(nib.Nifti1Image(np.asarray(data.dataobj) * 1.01, data.affine), str(img))
    assert cohort_key([discover_cohort(moved)], check, "features") != key
    assert cohort_key([discover_cohort(train_dir)], CheckSettings(shape=(16,) * 3, max_shift=1), "features") != key
    assert cohort_key([discover_cohort(train_dir)], check, "other features") != key


def test_template_pool_heads_are_kept_on_disk_bit_for_bit(tmp_path, monkeypatch):
    """The default mask mode builds a pool head per patient size (~2.5 CPU-s at 128^3): kept in
    synthkit's cache folder, read back identical, recomputed when the entry is damaged."""
    from synthkit.io import demo_cohort
    from synthkit.masks import template

    monkeypatch.setenv("SYNTHKIT_CACHE_DIR", str(tmp_path / "cache"))
    template._demo_head.cache_clear()
    head, affine = template._demo_head(3, 40, template.DEMO_POOL_SEED)
    want = demo_cohort.demo_head(3, 40, template.DEMO_POOL_SEED)
    assert np.array_equal(head, want[0]) and np.array_equal(affine, want[1])
    (entry,) = (tmp_path / "cache" / "template_heads").iterdir()
    template._demo_head.cache_clear()
    monkeypatch.setattr(demo_cohort, "demo_head", lambda *a: pytest.fail("the cached head was built again"))
    again = template._demo_head(3, 40, template.DEMO_POOL_SEED)
    assert np.array_equal(again[0], head) and again[0].dtype == bool and np.array_equal(again[1], affine)
    entry.write_bytes(b"damaged")
    template._demo_head.cache_clear()
    monkeypatch.setattr(demo_cohort, "demo_head", lambda *a: want)
    assert np.array_equal(template._demo_head(3, 40, template.DEMO_POOL_SEED)[0], head)
    assert np.load(entry)["head"].shape == (40,) * 3  # rewritten
    template._demo_head.cache_clear()


def test_limit_takes_the_first_cases_with_the_whole_runs_ids_and_seeds(world, tmp_path):
    """``limit`` (the demo's anonymize stage): the first cases of the sorted cohort only, each
    under the id and seed the whole cohort's run gives it."""
    from synthkit.errors import UsageError
    from synthkit.io import discover_cohort
    from synthkit.jobs.anonymize import _ID_STREAM, AnonymizeSettings, anonymize
    from synthkit.pipeline.seeds import seed_for

    _root, _train, run, cohort = world
    s = AnonymizeSettings(sampler="ddim", steps=2, seed=5, privacy_gate=False, perturb_masks=None)
    res = anonymize(cohort, run, tmp_path / "out", settings=s, limit=2)
    n = len(discover_cohort(cohort, need_images=False).cases)
    assert n > 2
    ids = outputs.fresh_case_ids(n, np.random.default_rng([s.seed, _ID_STREAM]))
    assert res.written == ids[:2]
    man = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert man["settings"]["n_cases"] == 2
    assert [c["seed"] for c in man["cases"]] == [seed_for(s.seed, oid, 0) for oid in sorted(ids[:2])]
    with pytest.raises(UsageError, match="limit"):
        anonymize(cohort, run, tmp_path / "zero", settings=s, limit=0)
