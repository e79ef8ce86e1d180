"""The privacy-reference seed (:mod:`synthkit.privacy.audit.reference_seed`): a shipped, small
form of the training side that gives the checker computing it would give, is used only for the
very cohort it was made from, and is what synthkit computes for the demo model's training cohort."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from phantoms import phantom

from synthkit.io import discover_cohort, write_nifti, write_nnunet_dataset_json
from synthkit.privacy.audit.check import CheckSettings
from synthkit.privacy.audit.reference_cache import _state_arrays, cohort_key
from synthkit.privacy.audit.reference_seed import FOLDER, read_seed, write_seed
from synthkit.privacy.gate import prepare_reference

SHIPPED = Path(__file__).resolve().parents[1] / "synthkit" / "assets" / "models" / "demo-latent" / FOLDER


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SYNTHKIT_CACHE_DIR", str(tmp_path / "synthkit_cache"))


def _cohort(root: Path, n: int = 8) -> Path:
    for i in range(n):
        img, msk = phantom(16, seed=i)
        write_nifti(root / "imagesTr" / f"subj_{i:03d}_0000.nii.gz", img.data, img.affine)
        write_nifti(root / "labelsTr" / f"subj_{i:03d}.nii.gz", msk.data, msk.affine, is_label=True)
    write_nnunet_dataset_json(root, ("T1",), {"background": 0, "head": 1, "tumour": 2}, n)
    return root


def _same(a, b) -> None:
    sa, sb = _state_arrays(a.checker), _state_arrays(b.checker)
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert np.array_equal(sa[k], sb[k], equal_nan=True), k
    assert a.checker.train.ids == b.checker.train.ids and a.digests == b.digests


def test_a_seed_gives_the_computed_checker_and_only_for_its_cohort(tmp_path):
    check = CheckSettings(shape=(16,) * 3, use_features=False)
    train = _cohort(tmp_path / "train")
    full = prepare_reference(train, check, cache=tmp_path / "c_full")
    key = cohort_key([discover_cohort(train)], check, None)
    ship = tmp_path / "ship"
    files = write_seed(ship, key, full.checker, full.digests)
    text = "".join(f.read_bytes().decode("latin-1") for f in files)
    assert "subj_" not in text  # no case ids
    notes: list[str] = []
    seeded = prepare_reference(train, check, cache=tmp_path / "c_seed", shipped=ship, note=notes.append)
    assert any("shipped with the model" in n for n in notes)
    _same(seeded, full)  # array for array, ids and mask digests
    full.checker.n_synthetic = seeded.checker.n_synthetic = 4
    assert seeded.calibration() == full.calibration()
    # the cache entry written from the seed is the full one: a second run reads it
    notes.clear()
    _same(prepare_reference(train, check, cache=tmp_path / "c_seed", shipped=ship, note=notes.append), full)
    assert any("from the cache" in n for n in notes)

    # another cohort (one file changed): another key, the seed is not looked at
    other = tmp_path / "other"
    shutil.copytree(train, other)
    img = min((other / "imagesTr").iterdir())
    data = nib.load(str(img))
    nib.save(nib.Nifti1Image(np.asarray(data.dataobj) * 1.3 + 5, data.affine), str(img))
    want = prepare_reference(other, check, cache=tmp_path / "c_other")
    notes.clear()
    _same(prepare_reference(other, check, cache=tmp_path / "c_other2", shipped=ship, note=notes.append), want)
    assert not any("shipped" in n for n in notes)
    # a seed under the other cohort's key that was made from different volumes is refused, not trusted
    key2 = cohort_key([discover_cohort(other)], check, None)
    for f in ship.iterdir():
        f.rename(ship / f.name.replace(key, key2))
    meta = ship / f"{key2}.seed.json"
    meta.write_text(meta.read_text().replace(key, key2))
    assert read_seed(ship, key2) is not None
    got = prepare_reference(other, check, cache=tmp_path / "c_other3", shipped=ship, note=notes.append)
    assert not any("shipped" in n for n in notes)
    _same(got, want)


def test_the_shipped_demo_seed_is_what_synthkit_computes():
    """Two of demo-latent's 64 training subjects rebuilt at the real size (128^3, the recipe in
    train_cohort.json): their features and mirrored features (deepbet) and mask digests are those
    in the shipped seed; the seed is small and names no case."""
    from synthkit.io import read_mask
    from synthkit.io.demo_cohort import write_demo_cohort
    from synthkit.privacy.audit.runner import load_set, make_extractor
    from synthkit.privacy.audit.volumes import with_features
    from synthkit.privacy.gate import mask_digest

    recipe = json.loads((SHIPPED.parent / "train_cohort.json").read_text())["demo_cohort"]
    (meta_path,) = SHIPPED.glob("*.seed.json")
    seed = read_seed(SHIPPED, meta_path.name.split(".")[0])
    assert seed is not None and seed.meta["n_train"] == recipe["n"] == 64
    total = sum(f.stat().st_size for f in SHIPPED.iterdir())
    assert total < 3e6
    assert "case_" not in "".join(f.read_bytes().decode("latin-1") for f in SHIPPED.iterdir())
    check = CheckSettings(shape=(32,) * 3, seed=0)  # the demo's anonymize stage
    ext = make_extractor(None, seed=check.seed)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        picks = [0, recipe["n"] - 1]
        for j in picks:
            write_demo_cohort(Path(tmp) / f"s{j}", n=1, size=recipe["size"], seed=recipe["seed"], first=j)
        for j in picks:
            root = Path(tmp) / f"s{j}"
            vs = with_features(load_set(root, "training", check, None, errors=[]), ext, mirrored=True)
            # bit for bit on the machine that made the seed (one torch thread); deepbet in float32 may round
            # differently on another CPU or thread count (~1e-6), hence the tolerance
            assert np.allclose(vs.features[0], seed.arrays["train.features"][j], rtol=1e-5, atol=1e-6)
            assert np.allclose(vs.features_flipped[0], seed.arrays["train.features_flipped"][j], rtol=1e-5,
                               atol=1e-6)
            (case,) = discover_cohort(root).cases
            assert seed.digests[mask_digest(read_mask(case).data)] == j
