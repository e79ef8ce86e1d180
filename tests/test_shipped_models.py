"""The shipped models (synthkit/assets/models): they load by name, hold fp16 weights whose hashes
the loaders check, record their training cohort as a recipe (no local path), carry a model card,
and the latent one samples a 128^3 volume on the mask's own grid."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors import safe_open

import synthkit
from synthkit.io.hashing import file_sha256
from synthkit.pipeline import resolve_run


@pytest.mark.parametrize("name,grid,kind", [("demo", 32, "ddpm"), ("demo-latent", 128, "latent")])
def test_shipped_model_loads_by_name_with_fp16_weights_a_recipe_and_a_card(name, grid, kind):
    run = resolve_run(name)
    pipe = synthkit.load(name)
    assert pipe.config.model_type == kind and tuple(pipe.config.preprocess.target_shape) == (grid,) * 3
    weights = [run / "model.safetensors"] + ([run / "autoencoder" / "model.safetensors"] if kind == "latent" else [])
    for w in weights:
        with safe_open(str(w), framework="pt") as f:
            assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}  # noqa: SIM118
    recipe = json.loads((run / "train_cohort.json").read_text())
    assert "path" not in recipe and recipe["demo_cohort"] == {"n": 64, "size": grid, "seed": 0, "first": 0}
    card = (run / "MODEL_CARD.md").read_text()
    assert "held-out" in card.lower() and "bf16" in card
    if kind == "latent":
        assert pipe.autoencoder_sha256 == file_sha256(run / "autoencoder" / "model.safetensors")
        assert pipe.latent_channels == 8 and pipe.factor == 4
        assert "PSNR" in card and "ceiling" in card
    leftovers = {p.name for p in run.rglob("*")} & {"checkpoint", "cache", "previews", "log.jsonl"}
    assert not leftovers


def test_demo_latent_samples_a_128_cube_on_the_masks_grid():
    from synthkit.io.demo_cohort import _subject

    _img, lab, aff, _ = _subject(np.random.default_rng([0, 1000]), 128)
    from synthkit.io.volume import Volume

    mask = Volume(lab[None].astype(np.int16), aff)
    vol = synthkit.load("demo-latent").sample(mask, seed=0, sampler="ddim", steps=3)
    assert vol.data.shape == (1, 128, 128, 128) and np.allclose(vol.affine, aff)
    data = vol.data[0]
    assert np.isfinite(data).all()
    inside, outside = data[lab > 0], data[lab == 0]
    assert inside.mean() > outside.mean() + 3 * outside.std()  # a head, on a held dark background
