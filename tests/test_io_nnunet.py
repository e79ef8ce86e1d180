"""dataset.json: writing nnU-Net v2 metadata and reading v2 / v1 / region-based files."""

from __future__ import annotations

import json

import pytest

from synthkit.errors import CohortError
from synthkit.io.nnunet import (
    nnunet_image_name,
    nnunet_label_name,
    read_dataset_json,
    write_nnunet_dataset_json,
)


def test_write_then_read_roundtrip(tmp_path):
    p = write_nnunet_dataset_json(tmp_path, ("T1", "FLAIR"), {"tumour": 2, "background": 0, "head": 1}, 12)
    raw = json.loads(p.read_text())
    assert raw == {
        "channel_names": {"0": "T1", "1": "FLAIR"},
        "labels": {"background": 0, "head": 1, "tumour": 2},
        "numTraining": 12,
        "file_ending": ".nii.gz",
    }
    dj = read_dataset_json(p)
    assert dj.channel_names == ("T1", "FLAIR")
    assert dj.labels == {"background": 0, "head": 1, "tumour": 2}
    assert dj.allowed_labels == frozenset({0, 1, 2})
    assert nnunet_image_name("case_007", 1) == "case_007_0001.nii.gz"
    assert nnunet_label_name("case_007") == "case_007.nii.gz"


@pytest.mark.parametrize("labels", [{"tumour": 1}, {"background": 0, "a": 1, "b": 1}])
def test_write_refuses_bad_labels(tmp_path, labels):
    with pytest.raises(ValueError):
        write_nnunet_dataset_json(tmp_path, ("T1",), labels, 1)
    assert not (tmp_path / "dataset.json").exists()


def test_region_labels_widen_allowed_set(tmp_path):
    (tmp_path / "dataset.json").write_text(json.dumps({
        "channel_names": {"1": "T2", "0": "T1"},
        "labels": {"background": 0, "whole tumour": [1, 2, 3], "enhancing": 3},
        "file_ending": ".nii",
    }))
    dj = read_dataset_json(tmp_path / "dataset.json")
    assert dj.channel_names == ("T1", "T2")
    assert dj.labels == {"background": 0, "enhancing": 3}
    assert dj.allowed_labels == frozenset({0, 1, 2, 3})
    assert dj.file_ending == ".nii"


@pytest.mark.parametrize("text,match", [
    ("{not json", "unreadable dataset.json"),
    ('{"channel_names": {"0": "T1", "2": "T2"}}', "0, 1, 2"),
    ('{"labels": {"background": "zero"}}', "bad label entry"),
])
def test_malformed_dataset_json(tmp_path, text, match):
    (tmp_path / "dataset.json").write_text(text)
    with pytest.raises(CohortError, match=match):
        read_dataset_json(tmp_path / "dataset.json")
