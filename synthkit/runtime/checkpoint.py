"""The checkpoint format: resumable training checkpoints and weight files, written atomically and
loaded safely. Training writes them; inference (:mod:`synthkit.pipeline`) reads the weight files.

A checkpoint is ONE safetensors file: every tensor (model, EMA, optimizer moments, RNG
states) is a named tensor, and everything else (step, optimizer hyper-parameters, the run
config, timings) is a JSON document stored in the safetensors header metadata under
``"synthkit"``. One file means one atomic rename: a ``kill -9`` at any moment leaves either
the previous checkpoint or the new one, never a mixture.

Tensor names::

    model/<param>            live weights
    ema/<param>              EMA weights
    optim/<param_id>/<name>  optimizer state (e.g. exp_avg, exp_avg_sq, step)
    rng/<rank>/<name>        RNG states of each rank (see synthkit.training.rng)

Loading never unpickles: safetensors files are parsed as data only; legacy ``.pt`` weight
files go through ``torch.load(weights_only=True)``. Anything that is not what it should be
raises :class:`~synthkit.errors.CheckpointError` naming the file.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from synthkit.errors import CheckpointError
from synthkit.io.atomic import atomic_path

FORMAT = "synthkit-checkpoint"
WEIGHTS_FORMAT = "synthkit-weights"
VERSION = 1
_CKPT_RE = re.compile(r"^step_(\d{8,})\.safetensors$")


@dataclass
class TrainingState:
    """Everything needed to continue a run exactly where it stopped."""

    step: int
    model: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor]
    ema_updates: int
    optimizer: dict[str, Any]
    rng: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # rank -> states
    scaler: dict[str, Any] | None = None
    info: dict[str, Any] = field(default_factory=dict)  # JSON-able: config, elapsed time, ...


# --------------------------------------------------------------------------- optimizer


def flatten_optimizer(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into named tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, st in state["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{pid}/{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    meta = {"param_groups": state["param_groups"], "scalars": scalars}
    json.dumps(meta)  # fail early (TypeError) on anything not JSON-able
    return tensors, meta


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        pid, name = key.split("/", 1)
        state.setdefault(int(pid), {})[name] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if isinstance(g.get("betas"), list):
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# --------------------------------------------------------------------------- writing


def _save_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    from safetensors.torch import save_file

    flat = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path, suffix=".tmp") as tmp:
        save_file(flat, str(tmp), metadata=metadata)
        with open(tmp, "rb") as fh:  # make the bytes durable before the rename
            os.fsync(fh.fileno())
    return path


def save_checkpoint(path: str | Path, state: TrainingState) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file + fsync + rename)."""
    path = Path(path)
    tensors: dict[str, torch.Tensor] = {}
    tensors.update({f"model/{k}": v for k, v in state.model.items()})
    tensors.update({f"ema/{k}": v for k, v in state.ema.items()})
    opt_tensors, opt_meta = flatten_optimizer(state.optimizer)
    tensors.update({f"optim/{k}": v for k, v in opt_tensors.items()})
    for rank, states in state.rng.items():
        tensors.update({f"rng/{int(rank)}/{k}": v for k, v in states.items()})
    doc = {
        "format": FORMAT,
        "version": VERSION,
        "step": int(state.step),
        "ema_updates": int(state.ema_updates),
        "optimizer": opt_meta,
        "scaler": state.scaler,
        "info": state.info,
    }
    return _save_safetensors(path, tensors, {"format": FORMAT, "synthkit": json.dumps(doc)})


def save_weights(path: str | Path, weights: dict[str, torch.Tensor], info: dict[str, Any] | None = None) -> Path:
    """Write a plain weight file (e.g. ``model.safetensors`` with EMA weights) atomically."""
    doc = {"format": WEIGHTS_FORMAT, "version": VERSION, "info": info or {}}
    return _save_safetensors(Path(path), weights, {"format": WEIGHTS_FORMAT, "synthkit": json.dumps(doc)})


# --------------------------------------------------------------------------- reading


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Every tensor of a safetensors file (CPU) and its header metadata; CheckpointError naming the
    file for anything else (a pickle, a truncated or corrupt file)."""
    from safetensors import safe_open

    if not path.is_file():
        raise CheckpointError("no such checkpoint file", path)
    with open(path, "rb") as fh:
        head = fh.read(9)
    if len(head) < 9 or head[8:9] != b"{":
        kind = "a Python pickle" if head[:1] == b"\x80" else "not a safetensors file"
        raise CheckpointError(f"refusing to load: {kind}, not a synthkit checkpoint", path)
    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = dict(f.metadata() or {})
            for key in f.keys():  # noqa: SIM118  (safe_open is not iterable)
                tensors[key] = f.get_tensor(key)
    except Exception as e:  # noqa: BLE001  (safetensors raises its own error types for corrupt files)
        raise CheckpointError(f"corrupt or truncated safetensors file ({type(e).__name__}: {e})", path) from None
    return tensors, metadata


def read_doc(path: Path, metadata: dict[str, str], fmt: str) -> dict[str, Any]:
    """The synthkit JSON document in a file's ``metadata``, checked to be format ``fmt`` of this
    :data:`VERSION`; CheckpointError naming ``path`` otherwise."""
    if metadata.get("format") != fmt:
        raise CheckpointError(f"not a {fmt} file (format {metadata.get('format')!r})", path)
    try:
        doc = json.loads(metadata["synthkit"])
    except (KeyError, ValueError):
        raise CheckpointError("checkpoint metadata is missing or not valid JSON", path) from None
    if not isinstance(doc, dict) or doc.get("format") != fmt:
        raise CheckpointError("checkpoint metadata does not describe a synthkit file", path)
    if doc.get("version") != VERSION:
        raise CheckpointError(f"unsupported checkpoint version {doc.get('version')!r} (expected {VERSION})", path)
    return doc


def load_checkpoint(path: str | Path) -> TrainingState:
    """Read a checkpoint written by :func:`save_checkpoint` (CPU tensors). CheckpointError if invalid."""
    path = Path(path)
    tensors, metadata = read_safetensors(path)
    doc = read_doc(path, metadata, FORMAT)
    try:
        step = int(doc["step"])
        ema_updates = int(doc["ema_updates"])
        opt_meta = doc["optimizer"]
        if step < 0 or not isinstance(opt_meta, dict) or "param_groups" not in opt_meta:
            raise ValueError("bad step or optimizer record")
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"checkpoint metadata is incomplete ({e})", path) from None
    model, ema, opt = {}, {}, {}
    rng: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        prefix, _, rest = key.partition("/")
        if prefix == "model":
            model[rest] = value
        elif prefix == "ema":
            ema[rest] = value
        elif prefix == "optim":
            opt[rest] = value
        elif prefix == "rng":
            rank, _, name = rest.partition("/")
            rng.setdefault(int(rank), {})[name] = value
        else:
            raise CheckpointError(f"unexpected tensor {key!r} in checkpoint", path)
    if not model or not ema:
        raise CheckpointError("checkpoint holds no model or EMA weights", path)
    try:
        optimizer = unflatten_optimizer(opt, opt_meta)
    except (ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"optimizer state is malformed ({e})", path) from None
    return TrainingState(step=step, model=model, ema=ema, ema_updates=ema_updates, optimizer=optimizer,
                         rng=rng, scaler=doc.get("scaler"), info=doc.get("info") or {})


def load_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from ``model.safetensors`` (or a synthkit checkpoint, whose EMA weights are
    returned), or from a legacy ``.pt``/``.pth`` file via ``torch.load(weights_only=True)``."""
    path = Path(path)
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        if not path.is_file():
            raise CheckpointError("no such weights file", path)
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:  # noqa: BLE001  (UnpicklingError and friends: refuse whatever it is)
            raise CheckpointError(f"refusing to load: not a plain weights file ({type(e).__name__})", path) from None
        for key in ("ema", "model", "state_dict"):
            if isinstance(obj, dict) and isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        if not isinstance(obj, dict) or not all(torch.is_tensor(v) for v in obj.values()):
            raise CheckpointError("weights file does not hold a flat dict of tensors", path)
        return obj
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") == FORMAT:
        return load_checkpoint(path).ema
    read_doc(path, metadata, WEIGHTS_FORMAT)
    return tensors


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(tensors, info)`` of a weights file written by :func:`save_weights` (never a training
    checkpoint: CheckpointError naming the file)."""
    path = Path(path)
    tensors, metadata = read_safetensors(path)
    if metadata.get("format") != WEIGHTS_FORMAT:
        raise CheckpointError("not a synthkit weights file (model.safetensors holds EMA weights, "
                              "not a training checkpoint)", path)
    return tensors, read_doc(path, metadata, WEIGHTS_FORMAT).get("info") or {}


def check_state_dict(model: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str = "weights") -> None:
    """Raise CheckpointError unless ``state`` has exactly ``model``'s keys and shapes."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = []
        if missing:
            detail.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"unexpected {len(unexpected)} (e.g. {unexpected[0]})")
        raise CheckpointError(f"{what} do not match the model: {', '.join(detail)}", path)
    for key, ref in expected.items():
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{what} do not match the model: {key} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(ref.shape)}", path)


# --------------------------------------------------------------------------- run folders


def restore_model_state(state: TrainingState, path: Path, model: nn.Module, ema: Any, optimizer: Any,
                        weights_label: str = "model weights") -> None:
    """Load a checkpoint's model, EMA and optimizer state into a trainer's objects, refusing (with
    one line naming ``path``) weights or optimizer state that do not fit. Shared by every trainer."""
    check_state_dict(model, state.model, path, weights_label)
    check_state_dict(ema.model, state.ema, path, "EMA weights")
    model.load_state_dict(state.model)
    ema.load_state_dict(state.ema, state.ema_updates)
    try:
        optimizer.load_state_dict(state.optimizer)
    except (ValueError, KeyError, RuntimeError) as e:
        raise CheckpointError(f"optimizer state does not fit the model ({e})", path) from None


def checkpoint_dir(run_dir: str | Path) -> Path:
    return Path(run_dir) / "checkpoint"


def checkpoint_path(run_dir: str | Path, step: int) -> Path:
    return checkpoint_dir(run_dir) / f"step_{step:08d}.safetensors"


def list_checkpoints(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` for every checkpoint in the run folder, oldest first."""
    folder = checkpoint_dir(run_dir)
    if not folder.is_dir():
        return []
    found = []
    for p in folder.iterdir():
        m = _CKPT_RE.match(p.name)
        if m:
            found.append((int(m.group(1)), p))
    return sorted(found)


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    found = list_checkpoints(run_dir)
    return found[-1][1] if found else None


def prune_checkpoints(run_dir: str | Path, keep: int = 2) -> None:
    """Delete all but the newest ``keep`` checkpoints (and stray temporary files)."""
    found = list_checkpoints(run_dir)
    for _, p in found[:-keep] if keep > 0 else found:
        p.unlink(missing_ok=True)
    folder = checkpoint_dir(run_dir)
    if folder.is_dir():
        for p in folder.glob(".step_*"):
            p.unlink(missing_ok=True)
