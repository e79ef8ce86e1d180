"""The mask-reading decoder (``synthkit autoencoder train --mask-decoder``): grown from a mask-free
autoencoder it starts as the same function, trains on the crops' own masks with the encoder
frozen, resumes bit for bit, and a latent run ships and samples with it (the image-grid mask
reaches the decoder); old autoencoders load without it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synthkit.config import AutoencoderRunConfig, autoencoder_config
from synthkit.networks.autoencoder import build_autoencoder
from synthkit.runtime import checkpoint as ckpt
from synthkit.training.autoencoder_eval import load_autoencoder

REPO = Path(__file__).resolve().parent.parent


def _pair(seed: int = 0) -> tuple[torch.nn.Module, torch.nn.Module]:
    cfg = autoencoder_config("tiny")
    torch.manual_seed(seed)
    old = build_autoencoder(cfg).eval()
    new = build_autoencoder(dataclasses.replace(cfg, mask_channels=2)).eval()
    new.load_state_dict({**new.state_dict(), **old.state_dict()})
    return old, new


def test_a_grown_decoder_is_the_old_function_until_trained_and_then_reads_the_mask():
    old, new = _pair()
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, old.cfg.latent_channels, 4, 4, 4, generator=g)
    mask = (torch.rand(2, 2, 16, 16, 16, generator=g) > 0.6).float()
    with torch.no_grad():
        assert torch.equal(old.decode(z), new.decode(z, mask))
        for conv in new.decoder.mask_in:  # as after training: the mask convs are no longer zero
            conv.weight.normal_(0, 0.1, generator=g)
        a, b = new.decode(z, mask), new.decode(z, torch.zeros_like(mask))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="reads the mask"):
        new.decode(z)
    with pytest.raises(ValueError, match="mask must be"):
        new.decode(z, mask[:, :, :8])
    with pytest.raises(ValueError, match=r"mask must be \(N, 2"):
        new.decode(z, mask[:, :1])


def test_old_autoencoder_configs_load_without_a_mask_decoder():
    # the first demo-latent's autoencoder config, written before mask_channels existed
    path = REPO / "tests/data/legacy/autoencoder_config.json"
    assert "mask_channels" not in json.loads(path.read_text())["autoencoder"]
    cfg = AutoencoderRunConfig.load(path)
    assert cfg.autoencoder.mask_channels == 0
    model = build_autoencoder(cfg.autoencoder)
    assert not model.needs_mask and model.decoder.mask_in is None
    assert not any(k.startswith("decoder.mask_in") for k in model.state_dict())


def _ae_cli(cli, cohort: Path, out: Path, *extra: str):
    return cli("autoencoder", "train", cohort, "--out", out, "--shape", "16", "16", "16", "--crop", "8",
               "--batch-size", "2", "--lr", "1e-3", "--lr-final", "1e-3", "--checkpoint-every", "2",
               "--preview-every", "0", "--quiet", *extra)


def test_cli_grows_a_mask_decoder_on_a_frozen_encoder_and_resumes_bit_identically(cohort, ae, tmp_path, cli):
    r = _ae_cli(cli, cohort, tmp_path / "m", "--init", ae, "--freeze-encoder", "--mask-decoder", "--steps", "4",
                "--seed", "2")
    assert r.exit_code == 0, r.output
    model, cfg = load_autoencoder(tmp_path / "m")
    base, bcfg = load_autoencoder(ae)
    assert cfg.autoencoder.mask_channels == 2 and cfg.scale_factor == bcfg.scale_factor
    enc = {k: v for k, v in base.state_dict().items() if k.startswith("encoder.")}
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in enc.items())
    assert any(float(c.weight.detach().abs().sum()) > 0 for c in model.decoder.mask_in)  # the mask convs trained
    # half the steps, then --resume: the same weights as straight through
    r = _ae_cli(cli, cohort, tmp_path / "h", "--init", ae, "--freeze-encoder", "--mask-decoder", "--steps", "4",
                "--seed", "2")
    assert r.exit_code == 0, r.output
    straight = ckpt.load_weights(tmp_path / "h" / "model.safetensors")
    r = _ae_cli(cli, cohort, tmp_path / "r", "--init", ae, "--freeze-encoder", "--mask-decoder", "--steps", "2",
                "--seed", "2")
    assert r.exit_code == 0, r.output
    cfg_path = tmp_path / "r" / "config.json"
    doc = json.loads(cfg_path.read_text())
    doc["train"]["steps"] = 4
    cfg_path.write_text(json.dumps(doc))
    r = cli("autoencoder", "train", cohort, "--out", tmp_path / "r", "--resume", "--quiet")
    assert r.exit_code == 0, r.output
    resumed = ckpt.load_weights(tmp_path / "r" / "model.safetensors")
    assert straight.keys() == resumed.keys() and all(torch.equal(v, resumed[k]) for k, v in straight.items())
    # eval reads the masks too
    r = cli("autoencoder", "eval", tmp_path / "m", cohort, "--json", tmp_path / "e.json", "--quiet")
    assert r.exit_code == 0, r.output
    assert np.isfinite(json.loads((tmp_path / "e.json").read_text())["mean"]["psnr"])
    # growing needs the same architecture otherwise
    r = _ae_cli(cli, cohort, tmp_path / "x", "--init", tmp_path / "m", "--mask-decoder", "--steps", "1")
    assert r.exit_code == 0, r.output  # a mask decoder may start from a mask decoder


def test_a_latent_run_ships_with_the_mask_decoder_and_samples_through_it(cohort, ae, tmp_path, cli):
    import synthkit
    from synthkit.io import discover_cohort, read_mask

    run = tmp_path / "run"
    r = cli("train", cohort, "--out", run, "--autoencoder", ae, "--preset", "tiny", "--timesteps", "10",
            "--steps", "2", "--checkpoint-every", "2", "--quiet")
    assert r.exit_code == 0, r.output
    r = _ae_cli(cli, cohort, tmp_path / "m", "--init", ae, "--freeze-encoder", "--mask-decoder", "--steps", "3")
    assert r.exit_code == 0, r.output
    r = cli("export", run, "--out", tmp_path / "shipped", "--autoencoder", tmp_path / "m")
    assert r.exit_code == 0, r.output
    pipe = synthkit.load(tmp_path / "shipped")
    assert pipe.autoencoder.needs_mask and pipe.ae_config.autoencoder.mask_channels == 2
    mask = read_mask(discover_cohort(cohort).cases[0])
    kw = {"seed": 4, "sampler": "ddim", "steps": 3}
    a, b = pipe.sample(mask, **kw), pipe.sample(mask, **kw)
    plain = synthkit.load(run).sample(mask, **kw)
    assert a.data.shape[1:] == mask.data.shape[1:] and np.array_equal(a.data, b.data)
    assert not np.array_equal(a.data, plain.data)  # the same latents, decoded with the mask
    # the decoder really reads the mask: the same latents with the tumour erased decode differently
    z = torch.randn(1, pipe.latent_channels, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    cond = pipe.prepare(mask)[0][None]
    assert cond.shape == (1, 2, 16, 16, 16) and cond[:, 1].any()
    erased = cond.clone()
    erased[:, 1] = 0
    assert not torch.equal(pipe.decode(z, cond), pipe.decode(z, erased))
    r = cli("sample", cohort, "--model", tmp_path / "shipped", "--out", tmp_path / "s", "--sampler", "ddim",
            "--steps", "2", "--quiet")
    assert r.exit_code == 0, r.output
    # another encoder cannot be shipped as this run's decoder
    r = _ae_cli(cli, cohort, tmp_path / "other", "--init", ae, "--mask-decoder", "--steps", "1")
    assert r.exit_code == 0, r.output
    r = cli("export", run, "--out", tmp_path / "bad", "--autoencoder", tmp_path / "other")
    assert r.exit_code == 2 and "differs from the run's" in r.output and len(r.output.strip().splitlines()) == 1
