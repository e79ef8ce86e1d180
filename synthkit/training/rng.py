"""Random-number-generator state as plain tensors (for safetensors checkpoints).

Captured: the global torch CPU RNG (used e.g. by dropout), every CUDA device's RNG, the
global numpy and Python ``random`` states, and any named ``torch.Generator`` (the training
loop's noise/timestep generator). Nothing is pickled: every state becomes an integer tensor
and comes back exactly.
"""

from __future__ import annotations

import random

import numpy as np
import torch


def generator_seed(seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s training ``torch.Generator`` for run seed ``seed``."""
    return (int(seed) * 1_000_003 + rank * 7_919 + 17) % 2**63


def capture_rng(generators: dict[str, torch.Generator] | None = None) -> dict[str, torch.Tensor]:
    """All RNG states as ``{name: tensor}`` (names are stable keys for a checkpoint)."""
    out: dict[str, torch.Tensor] = {"torch_cpu": torch.get_rng_state().clone()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i in range(torch.cuda.device_count()):
            out[f"torch_cuda{i}"] = torch.cuda.get_rng_state(i).clone()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    assert kind == "MT19937"
    out["numpy_keys"] = torch.from_numpy(np.asarray(keys, dtype=np.int64))
    out["numpy_pos"] = torch.tensor([pos, has_gauss], dtype=torch.int64)
    out["numpy_gauss"] = torch.tensor([cached], dtype=torch.float64)
    version, internal, gauss_next = random.getstate()
    out["python_state"] = torch.tensor(list(internal), dtype=torch.int64)
    out["python_meta"] = torch.tensor([version, 0 if gauss_next is None else 1], dtype=torch.int64)
    out["python_gauss"] = torch.tensor([gauss_next or 0.0], dtype=torch.float64)
    for name, g in (generators or {}).items():
        out[f"gen_{name}"] = g.get_state().clone()
    return out


def restore_rng(states: dict[str, torch.Tensor], generators: dict[str, torch.Generator] | None = None) -> None:
    """Inverse of :func:`capture_rng`. Missing entries (e.g. CUDA on a CPU machine) are skipped."""
    if "torch_cpu" in states:
        torch.set_rng_state(states["torch_cpu"].to(torch.uint8).cpu())
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            if f"torch_cuda{i}" in states:
                torch.cuda.set_rng_state(states[f"torch_cuda{i}"].to(torch.uint8).cpu(), i)
    if "numpy_keys" in states:
        pos, has_gauss = (int(v) for v in states["numpy_pos"].tolist())
        np.random.set_state(
            ("MT19937", states["numpy_keys"].numpy().astype(np.uint32), pos, has_gauss,
             float(states["numpy_gauss"].item()))
        )
    if "python_state" in states:
        version, has_gauss = (int(v) for v in states["python_meta"].tolist())
        gauss = float(states["python_gauss"].item()) if has_gauss else None
        random.setstate((version, tuple(int(v) for v in states["python_state"].tolist()), gauss))
    for name, g in (generators or {}).items():
        key = f"gen_{name}"
        if key in states:
            g.set_state(states[key].to(torch.uint8).cpu())
