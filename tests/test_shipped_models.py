"""The shipped models (synthkit/assets/models): they load by name, hold fp16 weights, record their
training cohort as a recipe (no local path), carry a model card and no training leftovers."""

from __future__ import annotations

import json

import pytest
from safetensors import safe_open

import synthkit
from synthkit.pipeline import resolve_run


@pytest.mark.parametrize("name,grid", [("demo", 32)])
def test_shipped_model_loads_by_name_with_fp16_weights_a_recipe_and_a_card(name, grid):
    run = resolve_run(name)
    pipe = synthkit.load(name)
    assert tuple(pipe.config.preprocess.target_shape) == (grid,) * 3
    with safe_open(str(run / "model.safetensors"), framework="pt") as f:
        assert {str(f.get_tensor(k).dtype) for k in f.keys()} == {"torch.float16"}  # noqa: SIM118
    recipe = json.loads((run / "train_cohort.json").read_text())
    assert "path" not in recipe and recipe["demo_cohort"] == {"n": 64, "size": grid, "seed": 0, "first": 0}
    card = (run / "MODEL_CARD.md").read_text()
    assert "held-out" in card.lower() and "bf16" in card
    leftovers = {p.name for p in run.rglob("*")} & {"checkpoint", "cache", "previews", "log.jsonl"}
    assert not leftovers
