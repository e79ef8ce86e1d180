"""Packaging: the deepbet encoder synthkit ships equals deepbet's own, the licence files and the
SPDX licence string are there, and `make demo` installs synthkit without the dev extras."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

from synthkit.errors import CheckpointError
from synthkit.metrics import deepbet

ROOT = Path(__file__).resolve().parent.parent


def test_shipped_encoder_is_deepbets_own_and_pinned(tmp_path):
    assert deepbet.ENCODER_ASSET.is_file()
    shipped, digest = deepbet.load()  # from the asset
    assert digest == deepbet.PINNED_SHA256[deepbet.MODEL_FILE]
    try:
        wheel_file = deepbet.locate()
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"deepbet's wheel is not installed ({e}); make venv installs it for this test")
    from_wheel, _ = deepbet.load(wheel_file)
    a, b = shipped.state_dict(), from_wheel.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # the asset is what export_encoder makes from the wheel (same tensors; the header's key order may differ)
    from safetensors.torch import load_file

    again, asset = load_file(deepbet.export_encoder(tmp_path / "enc.safetensors")), load_file(deepbet.ENCODER_ASSET)
    assert again.keys() == asset.keys() and all(torch.equal(again[k], asset[k]) for k in asset)


def test_a_changed_asset_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "deepbet_encoder.safetensors"
    data = bytearray(deepbet.ENCODER_ASSET.read_bytes())
    data[-1] ^= 1
    bad.write_bytes(bytes(data))
    monkeypatch.setattr(deepbet, "ENCODER_ASSET", bad)
    with pytest.raises(CheckpointError, match="differs from the pinned deepbet encoder"):
        deepbet.load()


def test_licence_files_and_spdx_string():
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is 3.11+; synthkit supports 3.10)
    assert re.search(r'^license = "Apache-2.0"$', pyproject, re.MULTILINE)
    assert re.search(r'^license-files = \["LICENSE", "NOTICE"\]$', pyproject, re.MULTILINE)
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    notice = (ROOT / "NOTICE").read_text()
    assert "Louis Collins, McConnell Brain Imaging Centre" in notice and "MNI ICBM152 2009" in notice
    assert "Medical Machine Learning Lab - University of Münster" in notice
    deps = pyproject.split("dependencies = [", 1)[1].split("]", 1)[0]
    assert "deepbet" not in deps and "\nfeatures =" not in pyproject


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_demo_installs_synthkit_without_the_dev_extras():
    import subprocess

    plan = subprocess.run(["make", "-n", "-B", "demo"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    installs = [ln for ln in plan.splitlines() if "pip install" in ln]
    assert any(re.search(r"-e \.$", ln) for ln in installs), installs
    assert not any("[dev]" in ln or "deepbet" in ln for ln in installs), installs
    test_plan = subprocess.run(["make", "-n", "-B", "test"], cwd=ROOT, capture_output=True, text=True,
                               check=True).stdout
    assert '".[dev]"' in test_plan
