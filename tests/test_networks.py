"""The Med-DDPM denoiser: shapes, parameter counts, MONAI equivalence, errors, precision."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from monai_compat import convert_monai_state_dict, monai_reference

from synthkit.config import ConfigError, ModelConfig, model_config
from synthkit.networks import Denoiser3D, build_denoiser, count_parameters
from synthkit.networks.embedding import timestep_embedding
from synthkit.runtime.precision import autocast_context, bf16_supported, resolve_precision

TINY_BRATS = {"image_channels": 4, "mask_classes": 4}


def _randomise(net: torch.nn.Module, seed: int = 0) -> None:
    """Zero-initialised layers make a fresh net output 0; give every weight a value."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)


def test_paper_preset_has_exactly_the_published_parameter_count():
    net = build_denoiser("paper", image_channels=1, mask_classes=2)
    assert count_parameters(net) == 40_226_433
    assert net.cfg.in_channels == 3


@pytest.mark.parametrize(("preset", "lo", "hi"), [("small", 1.5e6, 3.5e6), ("tiny", 5e4, 3e5)])
def test_small_and_tiny_presets_are_in_their_size_class(preset, lo, hi):
    assert lo < count_parameters(build_denoiser(preset)) < hi


def test_unknown_preset_is_a_config_error():
    with pytest.raises(ConfigError):
        build_denoiser("huge")


@pytest.mark.parametrize("preset", ["tiny", "small"])
def test_forward_shape_one_image_two_mask_channels(preset):
    net = build_denoiser(preset).eval()
    x = torch.randn(2, 3, 16, 16, 16)
    with torch.no_grad():
        y = net(x, torch.tensor([0, 249]))
    assert y.shape == (2, 1, 16, 16, 16)
    assert y.dtype == torch.float32


def test_brats_4_plus_4_builds_and_runs_at_16():
    net = build_denoiser("tiny", **TINY_BRATS)
    _randomise(net)
    x = torch.randn(1, 8, 16, 16, 16)
    y = net(x, torch.tensor([5]))
    assert y.shape == (1, 4, 16, 16, 16)
    assert torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_fresh_network_outputs_zero_because_output_conv_is_zero_initialised():
    net = build_denoiser("tiny")
    with torch.no_grad():
        y = net(torch.randn(1, 3, 8, 8, 8), torch.tensor([3]))
    assert torch.count_nonzero(y) == 0


def test_timestep_changes_the_output():
    net = build_denoiser("tiny").eval()
    _randomise(net)
    x = torch.randn(1, 3, 8, 8, 8)
    with torch.no_grad():
        assert not torch.allclose(net(x, torch.tensor([1])), net(x, torch.tensor([200])))


def test_timestep_embedding_is_cos_then_sin():
    e = timestep_embedding(torch.tensor([0, 7]), 8)
    assert e.shape == (2, 8)
    assert torch.allclose(e[0], torch.tensor([1.0] * 4 + [0.0] * 4))
    assert e[1, 0] == pytest.approx(torch.cos(torch.tensor(7.0)).item(), abs=1e-6)


@pytest.mark.parametrize("shape", [(12, 16, 16), (16, 16, 10)])
def test_spatial_size_not_divisible_is_a_value_error(shape):
    net = build_denoiser("small")  # 4 levels -> multiples of 8
    with pytest.raises(ValueError, match="divisible by 8"):
        net(torch.randn(1, 3, *shape), torch.tensor([1]))


def test_wrong_channel_count_is_a_value_error():
    net = build_denoiser("tiny")
    with pytest.raises(ValueError, match="input channels"):
        net(torch.randn(1, 2, 8, 8, 8), torch.tensor([1]))


def test_bad_config_is_rejected():
    with pytest.raises(ValueError, match="norm_groups"):
        Denoiser3D(model_config("tiny", norm_groups=3))
    with pytest.raises(ValueError, match="attention_levels"):
        Denoiser3D(model_config("tiny", attention_levels=(True,)))


def test_non_cubic_volume_runs():
    net = build_denoiser("tiny")
    assert net(torch.randn(1, 3, 8, 16, 4), torch.tensor([1])).shape == (1, 1, 8, 16, 4)


def test_gradient_checkpointing_gives_the_same_gradients():
    cfg = model_config("tiny")
    a = Denoiser3D(cfg)
    _randomise(a)
    b = Denoiser3D(dataclasses.replace(cfg, gradient_checkpointing=True))
    b.load_state_dict(a.state_dict())
    x, t = torch.randn(2, 3, 8, 8, 8), torch.tensor([3, 9])
    for net in (a, b):
        net.train()
        net(x, t).square().mean().backward()
    for (name, pa), pb in zip(a.named_parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa.grad, pb.grad, rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("timesteps", [(4, 180), (7, 7)])  # per-sample / shared (bias-folded)
def test_matches_monai_diffusion_unet_with_mapped_weights(timesteps):
    pytest.importorskip("monai.networks.nets")
    cfg = ModelConfig(
        image_channels=1,
        mask_classes=2,
        base_channels=8,
        channel_mults=(1, 2, 2),
        num_res_blocks=2,
        attention_levels=(False, True, False),
        num_heads=2,
        norm_groups=4,
    )
    ref = monai_reference(cfg).eval()
    _randomise(ref, seed=1)
    ours = Denoiser3D(cfg).eval()
    ours.load_state_dict(convert_monai_state_dict(ref.state_dict()), strict=True)
    assert count_parameters(ours) == count_parameters(ref)
    x, t = torch.randn(2, 3, 16, 16, 16), torch.tensor(timesteps)
    with torch.no_grad():
        expected, got = ref(x, t), ours(x, t)
    assert expected.abs().mean() > 1e-2  # not a trivially zero comparison
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_autocast_bf16_is_close_to_fp32_and_returns_fp32():
    net = build_denoiser("tiny").eval()
    _randomise(net)
    x, t = torch.randn(1, 3, 8, 8, 8), torch.tensor([10])
    with torch.no_grad():
        ref = net(x, t)
        with autocast_context("cpu", "bf16") as used:
            y = net(x, t)
    assert used == ("bf16" if bf16_supported("cpu") else "fp32")
    assert y.dtype == torch.float32
    rel = (y - ref).norm() / ref.norm()
    assert rel < 0.05


def test_precision_resolution():
    assert resolve_precision("cpu", None) == "fp32"
    assert resolve_precision("cpu", "fp16") == "fp32"  # fp16 autocast is CUDA-only here
    assert resolve_precision("cpu", "auto") in ("bf16", "fp32")
    with pytest.raises(ValueError):
        resolve_precision("cpu", "int8")  # type: ignore[arg-type]


def test_shared_timestep_fast_path_matches_per_sample_path():
    """A batch with one shared t folds the embedding into conv biases; mixed t adds it."""
    net = build_denoiser("tiny")
    _randomise(net)
    x = torch.randn(2, 3, 8, 8, 8)
    with torch.no_grad():
        mixed = net(x, torch.tensor([5, 9]))  # per-sample embedding path
        shared = net(x, torch.tensor([5, 5]))  # folded path
        alone = net(x[1:], torch.tensor([9]))  # folded path, N = 1
    torch.testing.assert_close(shared[0], mixed[0], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(alone[0], mixed[1], rtol=1e-4, atol=1e-5)
