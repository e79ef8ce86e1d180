from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synthkit.metrics import fid
from synthkit.metrics.bootstrap import bootstrap, mean_interval, split_half_floor
from synthkit.metrics.paired import mse, pair_by_case_id, pairs_from_manifest


def test_bootstrap_is_seeded_and_brackets_value():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 4)), rng.normal(size=(60, 4)) + 1.0
    r1 = bootstrap(fid, a, b, n_boot=30, seed=5)
    r2 = bootstrap(fid, a, b, n_boot=30, seed=5)
    assert r1 == r2
    assert r1.value == pytest.approx(fid(a, b))
    assert r1.ci95[0] < r1.value < r1.ci95[1] and r1.std > 0 and r1.n == 30


def test_mean_interval_and_split_half():
    v = np.array([1.0, 2.0, 3.0, 4.0])
    r = mean_interval(v, n_boot=200, seed=0)
    assert r.value == 2.5 and r.std == pytest.approx(np.std(v, ddof=1))
    assert 1.0 <= r.ci95[0] <= 2.5 <= r.ci95[1] <= 4.0
    rng = np.random.default_rng(1)
    real = rng.normal(size=(40, 3))
    floor = split_half_floor(fid, real, repeats=5, seed=0)
    assert floor.n == 5 and floor.value > 0
    assert fid(real, real + 3) > floor.ci95[1]
    json.dumps(floor.to_dict())


def test_mse_per_item():
    x = torch.zeros(3, 1, 4, 4, 4)
    y = torch.ones(3, 1, 4, 4, 4) * torch.tensor([0.0, 1.0, 2.0]).view(3, 1, 1, 1, 1)
    torch.testing.assert_close(mse(x, y), torch.tensor([0.0, 1.0, 4.0], dtype=torch.float64))
    with pytest.raises(ValueError):
        mse(x, y[:2])


def test_pairing_by_id_and_manifest(tmp_path):
    real = ["case_001", "case_002", "case_003"]
    synth = ["case_002", "case_001_s0", "case_001_s1", "other"]
    assert pair_by_case_id(real, synth) == [(1, 0), (0, 1), (0, 2)]
    man = tmp_path / "manifest.json"
    man.write_text(json.dumps({"items": [{"case_id": "syn_a", "source_case": "case_003"},
                                         {"case_id": "syn_b", "source_case": "nope"}]}))
    assert pairs_from_manifest(man, real, ["syn_b", "syn_a"]) == [(2, 1)]
    # synthkit.jobs.sample's manifest
    man.write_text(json.dumps({"items": [
        {"case": "case_003", "k": 1, "images": ["imagesTr/case_003_s1_0000.nii.gz"]},
        {"case": "case_001", "k": 0}]}))
    assert pairs_from_manifest(man, real, ["case_001_s0", "case_003_s1"]) == [(2, 1), (0, 0)]
