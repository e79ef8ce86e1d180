"""The shipped models (synthkit/assets/models): they load by name, hold fp16 weights, record their
training cohort as a recipe (no local path), carry a model card and no training leftovers; the
latent one carries the autoencoder its denoiser was trained with and makes a 128^3 head on the
mask's own grid."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
from safetensors import safe_open

import synthkit
from synthkit.io.hashing import file_sha256
from synthkit.pipeline import resolve_run
from synthkit.pipeline.latent import recorded_autoencoder_sha256


def _dtypes(path) -> set[str]:
    with safe_open(str(path), framework="pt") as f:
        return {str(f.get_tensor(k).dtype) for k in f.keys()}  # noqa: SIM118


@pytest.mark.parametrize("name,grid", [("demo", 32), ("demo-latent", 128)])
def test_shipped_model_loads_by_name_with_fp16_weights_a_recipe_and_a_card(name, grid):
    run = resolve_run(name)
    pipe = synthkit.load(name)
    assert tuple(pipe.config.preprocess.target_shape) == (grid,) * 3
    weights = [run / "model.safetensors", *run.glob("autoencoder/model.safetensors")]
    for w in weights:
        assert _dtypes(w) == {"torch.float16"}, w
    recipe = json.loads((run / "train_cohort.json").read_text())
    assert "path" not in recipe and recipe["demo_cohort"] == {"n": 64, "size": grid, "seed": 0, "first": 0}
    card = (run / "MODEL_CARD.md").read_text()
    assert "held-out" in card.lower() and "bf16" in card
    leftovers = {p.name for p in run.rglob("*")} & {"checkpoint", "cache", "previews", "log.jsonl"}
    assert not leftovers


def test_demo_latent_carries_its_autoencoder_and_reports_psnr_beside_the_noise_ceiling():
    run = resolve_run("demo-latent")
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["model_type"] == "latent"
    assert recorded_autoencoder_sha256(run / "model.safetensors") == file_sha256(run / "autoencoder" / "model.safetensors")
    card = (run / "MODEL_CARD.md").read_text()
    psnr = [float(x) for x in re.findall(r"(\d\d\.\d\d) dB", card)]
    assert psnr and "ceiling" in card.lower()


def test_demo_latent_samples_a_128_head_on_the_masks_grid(tmp_path):
    from synthkit.io.demo_cohort import write_demo_cohort

    cohort = write_demo_cohort(tmp_path / "c", n=1, size=128, seed=0, first=1000)
    mask = cohort.cases[0].mask
    pipe = synthkit.load("demo-latent", device="cpu")
    a = pipe.sample(mask, seed=3, sampler="ddim", steps=2)
    b = pipe.sample(mask, seed=3, sampler="ddim", steps=2)
    import nibabel as nib

    ref = nib.load(str(mask))
    assert a.data.shape[1:] == ref.shape and np.allclose(a.affine, ref.affine)
    np.testing.assert_array_equal(a.data, b.data)
    head = np.asarray(ref.dataobj) > 0
    inside, outside = a.data[0][head], a.data[0][~head]
    assert np.ptp(outside) == 0 and inside.std() > 0
