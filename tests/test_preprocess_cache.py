"""synthkit.cache: preprocess once, reuse on rerun, skip (or refuse) bad cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from phantoms import phantom

import synthkit.cache as cache_mod
from synthkit.cache import CachedCohort, cache_cohort
from synthkit.config import PreprocessConfig
from synthkit.errors import CohortError
from synthkit.io.cohort import discover_cohort
from synthkit.io.nifti import write_nifti
from synthkit.io.nnunet import write_nnunet_dataset_json
from synthkit.preprocess import one_hot, preprocess_case

CFG = PreprocessConfig(target_shape=(12, 12, 12))


def make_cohort(root, n: int = 3, size: int = 14):
    for i in range(n):
        img, mask = phantom(size=size, seed=i)
        write_nifti(root / "imagesTr" / f"case_{i:03d}_0000.nii.gz", img.data, img.affine)
        write_nifti(
            root / "labelsTr" / f"case_{i:03d}.nii.gz", mask.data, mask.affine, is_label=True
        )
    write_nnunet_dataset_json(root, ("T1",), {"background": 0, "head": 1, "tumour": 2}, n)
    return discover_cohort(root)


def test_items_and_reuse(tmp_path, monkeypatch):
    cohort = make_cohort(tmp_path / "raw")
    cached = cache_cohort(cohort, CFG, tmp_path / "cache")
    assert isinstance(cached, CachedCohort) and len(cached) == 3
    assert cached.case_ids == ["case_000", "case_001", "case_002"] and cached.skipped == []
    item = cached[1]
    assert item["image"].shape == (1, 12, 12, 12) and item["image"].dtype == torch.float32
    assert item["cond"].shape == (2, 12, 12, 12) and item["cond"].dtype == torch.float32
    assert item["labels"].shape == (12, 12, 12) and item["labels"].dtype == torch.int64
    assert item["index"] == 1
    torch.testing.assert_close(item["cond"], one_hot(item["labels"], (1, 2)))
    assert -1.0 <= item["image"].min() and item["image"].max() <= 1.0
    # identical to preprocessing the case directly
    img, mask = phantom(size=14, seed=1)
    direct = preprocess_case(img, mask, CFG)
    torch.testing.assert_close(item["labels"], direct.labels)
    torch.testing.assert_close(item["image"], direct.image, atol=1e-6, rtol=0)
    assert cached.records[1].original_shape == (14, 14, 14)
    np.testing.assert_allclose(cached.records[1].original_affine, mask.affine, atol=1e-6)

    # only safetensors + JSON, two per case, and nothing names a case
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 6 and {p.rsplit(".", 1)[1] for p in files} == {"safetensors", "json"}
    for p in (tmp_path / "cache").iterdir():
        assert b"case_" not in p.read_bytes()

    # a rerun reads the cache: preprocessing (and reading NIfTI) is not needed
    def boom(*a, **k):
        raise AssertionError("preprocessed again")

    monkeypatch.setattr(cache_mod, "preprocess_case", boom)
    again = cache_cohort(cohort, CFG, tmp_path / "cache")
    torch.testing.assert_close(again.images, cached.images)
    torch.testing.assert_close(again.labels, cached.labels)
    assert again.records == cached.records
    # another config is another key
    with pytest.raises(AssertionError, match="preprocessed again"):
        cache_cohort(cohort, PreprocessConfig(target_shape=(10, 10, 10)), tmp_path / "cache")


def test_changed_file_is_recomputed(tmp_path):
    cohort = make_cohort(tmp_path / "raw", n=2)
    first = cache_cohort(cohort, CFG, tmp_path / "cache")
    img, _ = phantom(size=14, seed=0)
    write_nifti(
        cohort.cases[0].images[0],
        img.data * 0 + np.arange(14, dtype=np.float32)[:, None, None],
        img.affine,
    )
    second = cache_cohort(cohort, CFG, tmp_path / "cache")
    assert not torch.equal(first.images[0], second.images[0])
    torch.testing.assert_close(first.images[1], second.images[1])
    assert len(list((tmp_path / "cache").glob("*.json"))) == 3


def test_damaged_cache_entry_is_recomputed(tmp_path):
    cohort = make_cohort(tmp_path / "raw", n=1)
    first = cache_cohort(cohort, CFG, tmp_path / "cache")
    (st,) = (tmp_path / "cache").glob("*.safetensors")
    st.write_bytes(st.read_bytes()[:20])
    second = cache_cohort(cohort, CFG, tmp_path / "cache")
    torch.testing.assert_close(first.images, second.images)


def test_bad_case_is_skipped_or_fatal_when_strict(tmp_path):
    cohort = make_cohort(tmp_path / "raw", n=3)
    bad = cohort.cases[1].images[0]
    bad.write_bytes(bad.read_bytes()[:200])  # truncated gzip
    with pytest.warns(UserWarning, match="case_001"):
        cached = cache_cohort(cohort, CFG, tmp_path / "cache")
    assert cached.case_ids == ["case_000", "case_002"] and len(cached) == 2
    assert [cid for cid, _ in cached.skipped] == ["case_001"]
    assert cached[1]["index"] == 1
    with pytest.raises(CohortError, match="case_001"):
        cache_cohort(cohort, CFG, tmp_path / "cache2", strict=True)


def test_unexpected_labels_skip_case(tmp_path):
    cohort = make_cohort(tmp_path / "raw", n=2)
    _, mask = phantom(size=14, seed=0)
    write_nifti(
        cohort.cases[0].mask, np.where(mask.data == 2, 5, mask.data), mask.affine, is_label=True
    )
    with pytest.warns(UserWarning, match="mask_labels"):
        cached = cache_cohort(cohort, CFG, tmp_path / "cache")
    assert cached.case_ids == ["case_001"]


def test_nothing_usable_is_an_error(tmp_path):
    cohort = make_cohort(tmp_path / "raw", n=1)
    p = cohort.cases[0].mask
    p.write_bytes(b"not a nifti")
    with pytest.warns(UserWarning), pytest.raises(CohortError, match="no usable case"):
        cache_cohort(cohort, CFG, tmp_path / "cache")


def test_masks_only_cohort(tmp_path):
    for i in range(2):
        _, mask = phantom(size=14, seed=i)
        write_nifti(tmp_path / "masks" / f"m{i}.nii.gz", mask.data, mask.affine, is_label=True)
    cohort = discover_cohort(tmp_path / "masks", need_images=False)
    cached = cache_cohort(cohort, CFG, tmp_path / "cache")
    assert len(cached) == 2 and cached.images is None and cached.image_channels == 0
    item = cached[0]
    assert "image" not in item and item["cond"].shape == (2, 12, 12, 12)


def test_progress_callable(tmp_path):
    cohort = make_cohort(tmp_path / "raw", n=2)
    calls = []
    cache_cohort(
        cohort, CFG, tmp_path / "cache", progress=lambda done, total: calls.append((done, total))
    )
    assert calls == [(1, 2), (2, 2)]
    meta = json.loads(next((tmp_path / "cache").glob("*.json")).read_text())
    assert set(meta) == {"format", "record"}
