"""The one noise rule (synthkit.noise): every trainer and sampler draws on a CPU generator and moves
the result, so the same seed gives the same noise whatever the device string.

No GPU here: PyTorch's ``meta`` device stands in for "some other device" (a CPU generator cannot
fill a meta tensor directly, exactly as it cannot fill a CUDA one). The proof that the same numbers
were drawn is the generator's state: it advances exactly as it does for the CPU draw."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from test_training_helpers import write_phantom_cohort

from synthkit import noise
from synthkit.config import (
    AutoencoderRunConfig,
    DiffusionConfig,
    PreprocessConfig,
    TrainConfig,
    autoencoder_config,
)
from synthkit.diffusion._checks import randn as chain_randn
from synthkit.diffusion.gaussian import GaussianDiffusion
from synthkit.networks.autoencoder import build_autoencoder
from synthkit.networks.gan import seeded_dropout

META = torch.device("meta")


def _after(seed: int, draw) -> torch.Tensor:
    g = noise.cpu_generator(seed)
    draw(g)
    return g.get_state()


@pytest.mark.parametrize("fn,args", [(noise.randn, ()), (noise.rand, ()), (noise.randint, (7,))])
def test_draws_are_the_cpu_draw_moved_to_the_device(fn, args):
    shape = (2, 3, 4)
    on_cpu = fn(*args, shape, noise.cpu_generator(5), "cpu")
    g = noise.cpu_generator(5)
    on_meta = fn(*args, shape, g, META)
    assert on_meta.device.type == "meta" and on_meta.shape == on_cpu.shape and on_meta.dtype == on_cpu.dtype
    assert torch.equal(g.get_state(), _after(5, lambda g: fn(*args, shape, g, "cpu")))
    reference = {noise.randn: lambda g: torch.randn(shape, generator=g),
                 noise.rand: lambda g: torch.rand(shape, generator=g),
                 noise.randint: lambda g: torch.randint(0, 7, shape, generator=g)}[fn]
    assert torch.equal(on_cpu, reference(torch.Generator().manual_seed(5)))


def test_cpu_generator_is_on_the_cpu_and_seeded():
    g = noise.cpu_generator(11)
    assert g.device.type == "cpu" and g.initial_seed() == 11


def test_diffusion_training_loss_draws_the_same_noise_on_any_device():
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=10))
    seen = {}

    def model(x, t):
        seen[x.device.type] = t
        return x[:, :1]

    def loss_on(device):
        x0 = torch.zeros(2, 1, 4, 4, 4, device=device)
        cond = torch.zeros(2, 1, 4, 4, 4, device=device)
        g = noise.cpu_generator(3)
        loss = diffusion.training_loss(model, x0, cond, generator=g)
        return loss, g.get_state()

    loss_cpu, state_cpu = loss_on("cpu")
    loss_meta, state_meta = loss_on(META)
    assert loss_meta.device.type == "meta" and torch.isfinite(loss_cpu)
    assert torch.equal(state_cpu, state_meta)  # the same timesteps and noise were drawn


def test_autoencoder_posterior_noise_on_another_device_uses_the_cpu_generator():
    model = build_autoencoder(autoencoder_config("tiny"))
    x = torch.zeros(1, 1, 8, 8, 8)
    g_cpu = noise.cpu_generator(4)
    model(x, generator=g_cpu)
    g_meta = noise.cpu_generator(4)
    recon, _, _ = model.to(META)(x.to(META), generator=g_meta)
    assert recon.device.type == "meta"
    assert torch.equal(g_cpu.get_state(), g_meta.get_state())


def test_gan_dropout_and_sampling_chain_accept_cpu_generators_for_another_device():
    x = torch.ones(2, 3, 4, 4, 4)
    gens = [noise.cpu_generator(1), noise.cpu_generator(2)]
    out = seeded_dropout(x.to(META), 0.5, gens)
    assert out.device.type == "meta"
    assert torch.equal(gens[0].get_state(), _after(1, lambda g: torch.rand((1, 3, 4, 4, 4), generator=g)))
    z = chain_randn((2, 1, 4, 4, 4), [noise.cpu_generator(1), noise.cpu_generator(2)], META)
    assert z.device.type == "meta" and z.shape == (2, 1, 4, 4, 4)


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    return write_phantom_cohort(tmp_path_factory.mktemp("cohort"), n=3)


def test_every_trainer_holds_a_cpu_generator(cohort, tmp_path):
    """Diffusion, autoencoder and GAN trainers: the training generator is a CPU one (drawn, then
    moved to the model's device), so `--device cuda` cannot change the noise of a seed."""
    import dataclasses

    from synthkit.config import RunConfig, gan_config, model_config
    from synthkit.training.autoencoder import AutoencoderTrainer
    from synthkit.training.gan import GanTrainer
    from synthkit.training.trainer import Trainer

    train = TrainConfig(steps=1, batch_size=1, checkpoint_every=1, seed=3)
    pre = PreprocessConfig(target_shape=(16, 16, 16))
    ddpm = RunConfig(model=model_config("tiny"), diffusion=DiffusionConfig(timesteps=10), preprocess=pre,
                     train=train, preset="tiny")
    ae = AutoencoderRunConfig(autoencoder=autoencoder_config("tiny"), crop=8, preset="tiny", preprocess=pre,
                              train=train)
    gan = dataclasses.replace(ddpm, model_type="pix2pix", gan=gan_config("tiny"))
    for name, cls, cfg in (("ddpm", Trainer, ddpm), ("ae", AutoencoderTrainer, ae), ("gan", GanTrainer, gan)):
        t = cls(cohort, tmp_path / name, cfg, cache_dir=tmp_path / f"cache_{name}")
        try:
            assert t.generator.device.type == "cpu", name
        finally:
            getattr(t, "close", lambda: None)()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU: checks the noise on the GPU itself")
def test_on_cuda_the_noise_equals_the_cpu_noise_and_the_autoencoder_trains(cohort, tmp_path):
    shape = (2, 1, 8, 8, 8)
    on_gpu = noise.randn(shape, noise.cpu_generator(9), "cuda")
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), noise.randn(shape, noise.cpu_generator(9), "cpu"))
    from synthkit.training.autoencoder import AutoencoderTrainer

    cfg = AutoencoderRunConfig(autoencoder=autoencoder_config("tiny"), crop=8, preset="tiny",
                               preprocess=PreprocessConfig(target_shape=(16, 16, 16)),
                               train=TrainConfig(steps=2, batch_size=1, checkpoint_every=1, seed=3))
    AutoencoderTrainer(cohort, tmp_path / "ae", cfg, device="cuda").run()  # drew posterior noise on the GPU
    assert (tmp_path / "ae" / "model.safetensors").is_file()
