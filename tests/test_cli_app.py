import subprocess
import sys


def test_help_lists_every_verb(cli):
    result = cli("--help")
    assert result.exit_code == 0
    for verb in ("train", "sample", "evaluate", "privacy", "anonymize", "augment", "masks",
                 "cohort", "demo", "segbench"):
        assert verb in result.output


def test_python_dash_m_works():
    out = subprocess.run([sys.executable, "-m", "synthkit", "--help"], check=False, capture_output=True, text=True)
    assert out.returncode == 0
    assert "cohort" in out.stdout


def test_version_is_the_installed_distributions(cli):
    from importlib.metadata import version

    result = cli("--version")
    assert result.exit_code == 0 and result.output.strip() == f"synthkit {version('synthkit-med')}"


def test_one_device_rule(monkeypatch):
    import pytest
    import torch

    from synthkit.cli._common import resolve_device
    from synthkit.errors import UsageError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("cpu") == "cpu" and resolve_device("auto") == "cpu" and resolve_device(" CPU ") == "cpu"
    for bad, message in (("cuda", "no CUDA GPU"), ("cuda:1", "no CUDA GPU"), ("gpu", "choose auto, cpu, cuda or cuda:N"),
                         ("cuda:x", "choose"), ("cuda:", "choose")):
        with pytest.raises(UsageError, match=message) as err:
            resolve_device(bad)
        assert err.value.exit_code == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert resolve_device("auto") == "cuda" and resolve_device("cuda") == "cuda" and resolve_device("cuda:1") == "cuda:1"
    with pytest.raises(UsageError, match="2 CUDA device"):
        resolve_device("cuda:2")


def _lines(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.strip()]


def test_device_and_choice_mistakes_are_one_line_exit_2(cli, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for args, needle in ((("train", tmp_path, "--out", tmp_path / "r", "--device", "cuda"), "--device cuda: no CUDA GPU"),
                         (("segbench", "--train", tmp_path, "--test", tmp_path, "--device", "tpu"), "--device 'tpu'"),
                         (("train", tmp_path, "--out", tmp_path / "r", "--precision", "fp8"), "'fp8' is not one of"),
                         (("train", tmp_path), "Missing option '--out'"),
                         (("trian",), "No such command 'trian'")):
        r = cli(*args)
        assert r.exit_code == 2, r.output
        lines = _lines(r.output)
        assert len(lines) == 1 and lines[0].startswith("synthkit: error: ") and needle in lines[0], r.output
    assert not (tmp_path / "r").exists()


def test_help_lists_choices(cli, monkeypatch):
    monkeypatch.setenv("COLUMNS", "300")  # rich would otherwise cut long choice lists
    out = cli("train", "--help").output
    for choices in ("ddpm|pix2pix|discogan", "fp32|bf16|fp16", "epsilon|v", "l1|l2", "tiny|small|medium|paper",
                    "auto|cpu|cuda|cuda:N"):
        assert choices in out, choices


def test_choice_enums_match_the_library():
    import typing

    from synthkit.cli import _common as c
    from synthkit.config import MODEL_PRESETS, MODEL_TYPES, DiffusionConfig, TrainConfig

    hints = {**typing.get_type_hints(TrainConfig), **typing.get_type_hints(DiffusionConfig)}
    assert [m.value for m in c.ModelKindChoice] == list(MODEL_TYPES)
    assert sorted(m.value for m in c.PresetChoice) == sorted(MODEL_PRESETS)
    assert [m.value for m in c.PrecisionChoice] == list(typing.get_args(hints["precision"]))
    assert [m.value for m in c.PredictionChoice] == list(typing.get_args(hints["prediction"]))
    assert [m.value for m in c.LossChoice] == list(typing.get_args(hints["loss"]))
    assert f"{c.SamplerChoice.DPMPP}" == "dpmpp" and c.value_of(c.LossChoice.L2) == "l2" and c.value_of(None) is None


def test_every_sampler_choice_makes_its_scheduler():
    """``--sampler`` offers samplers by name (SamplerChoice, the one sampler enum: the CLI module
    stays torch-free); each name it offers is the library's scheduler of that name."""
    from synthkit.cli._common import SamplerChoice, value_of
    from synthkit.config import DiffusionConfig
    from synthkit.diffusion import SAMPLERS, GaussianDiffusion, make_scheduler

    d = GaussianDiffusion(DiffusionConfig(timesteps=10))
    for choice in SamplerChoice:
        scheduler = make_scheduler(value_of(choice), d)
        assert type(scheduler) is SAMPLERS[choice.value] and scheduler.timesteps
