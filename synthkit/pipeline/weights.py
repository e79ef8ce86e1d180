"""Reading a run's weights and intensity bounds (safetensors only, never pickle)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthkit.errors import CheckpointError
from synthkit.io.hashing import file_sha256


def read_intensity(run_dir: Path) -> dict[str, list[float]]:
    """``intensity.json`` as ``{"lo": [...], "hi": [...]}`` per channel; ``{}`` when absent."""
    ipath = run_dir / "intensity.json"
    if not ipath.is_file():
        return {}
    try:
        data = json.loads(ipath.read_text())
        return {"lo": [float(v) for v in data["lo"]], "hi": [float(v) for v in data["hi"]]}
    except (ValueError, KeyError, TypeError):
        raise CheckpointError("intensity.json is malformed", ipath) from None


def load_network(build: Callable[[], Any], run_dir: Path, device: str, name: str = "model.safetensors",
                 what: str = "EMA weights") -> tuple[Any, str]:
    """``build()`` a network, fill it with ``run_dir/name`` (safetensors, checked key by key and
    shape by shape), put it in eval mode on ``device``, frozen; returns (network, file sha256)."""
    import torch

    from synthkit.runtime.checkpoint import check_state_dict, load_weights

    weights = run_dir / name
    state = load_weights(weights)
    with torch.random.fork_rng(devices=[]):  # building initialises weights: leave the global RNG alone
        model = build()
    check_state_dict(model, state, weights, what)
    model.load_state_dict(state)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, file_sha256(weights)
