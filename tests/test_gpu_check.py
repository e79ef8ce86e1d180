"""benchmarks/gpu_check.py: its CPU path runs every stage (tiny networks, gloo torchrun) and writes
its report; on a CUDA machine the real check runs (skipped here, with the reason)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_dry_run_and_argument_checks(capsys):
    mod = _module()
    assert mod.main(["--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["device"] == "cuda" and plan["steps"] == 30 and plan["batches"] == [1, 4, 8]
    assert plan["precisions"] == ["fp32", "bf16"] and plan["torchrun"] is True
    with pytest.raises(SystemExit):
        mod.main(["--device", "cpu"])  # 128^3 on a CPU: refused, --tiny is required


@pytest.mark.slow
def test_cpu_tiny_path_runs_every_stage(tmp_path):
    mod = _module()
    rc = mod.main(["--device", "cpu", "--tiny", "--results", str(tmp_path), "--work", str(tmp_path / "w"),
                   "--precisions", "fp32", "--batch-sizes", "1", "2"])
    out = json.loads((tmp_path / "gpu_tiny.json").read_text())
    assert rc == 0, [r for r in out["stages"] if not r["ok"]]
    stages = {r["stage"]: r for r in out["stages"]}
    assert set(stages) == {"train autoencoder", "train pixel", "train latent", "torchrun latent",
                           "sample pixel fp32 b1", "sample pixel fp32 b2", "sample latent fp32 b1",
                           "sample latent fp32 b2"}
    for name in ("train autoencoder", "train pixel", "train latent"):
        assert stages[name]["last_step"] == 4 and stages[name]["resumed_s_per_step"] > 0
    assert stages["torchrun latent"]["backend"] == "gloo"
    assert all(stages[f"sample latent fp32 b{b}"]["volumes"] == 4 for b in (1, 2))
    assert "| train pixel | 1 |" in (tmp_path / "gpu_tiny.md").read_text()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: runs benchmarks/gpu_check.py on it")
def test_gpu_check_on_cuda(tmp_path):
    mod = _module()
    rc = mod.main(["--device", "cuda", "--steps", "4", "--sample-steps", "2", "--results", str(tmp_path)])
    out = json.loads((tmp_path / "gpu.json").read_text())
    assert rc == 0, [r for r in out["stages"] if not r["ok"]]
    assert next(r for r in out["stages"] if r["stage"] == "torchrun latent")["backend"] == "nccl"
    assert all(r["peak_gib"] > 0 for r in out["stages"] if r["stage"].startswith("sample"))
