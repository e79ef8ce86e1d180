"""Finding and loading a run: ``synthkit.load(run) -> Pipeline`` of the run's model kind.

A run folder (written by ``synthkit train``) holds ``config.json`` (a :class:`RunConfig`),
``model.safetensors`` (EMA weights) and optionally ``intensity.json`` (the training cohort's
median per-channel intensity bounds). :func:`load` reads the config, picks the kind's
Pipeline class by ``config.model_type`` (:mod:`synthkit.pipeline.registry`), rebuilds its
network, loads the weights safely (safetensors, never pickle) and returns the Pipeline::

    pipe = synthkit.load("runs/demo")
    vol = pipe.sample(mask_volume, seed=0, sampler="ddim", steps=50)   # Volume on the mask's grid
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from synthkit.config import ConfigError, RunConfig
from synthkit.errors import CheckpointError, UsageError

if TYPE_CHECKING:
    from synthkit.pipeline.pipeline import Pipeline

#: Where shipped/downloaded models are looked up by name (``synthkit.load("demo")``).
MODEL_DIRS_ENV = "SYNTHKIT_MODELS"


def _model_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get(MODEL_DIRS_ENV, "").split(os.pathsep) if p]
    dirs.append(Path(__file__).parent.parent / "assets" / "models")
    dirs.append(Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "synthkit" / "models")
    return dirs


def resolve_run(run: str | Path) -> Path:
    """A run folder path, or the folder of a shipped model name (``$SYNTHKIT_MODELS``,
    ``synthkit/assets/models``, ``~/.cache/synthkit/models``)."""
    p = Path(run)
    if p.is_dir():
        return p
    if p.exists():
        raise CheckpointError("not a run folder (expected a folder with config.json and model.safetensors)", p)
    if len(p.parts) == 1:
        for d in _model_dirs():
            if (d / str(run)).is_dir():
                return d / str(run)
    raise CheckpointError("no such run folder or shipped model name", p)


def read_run_config(run_dir: Path) -> RunConfig:
    """``run_dir/config.json`` and a check that the weights are there; CheckpointError if not."""
    cfg_path = run_dir / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError("not a run folder: config.json is missing", run_dir)
    if not (run_dir / "model.safetensors").is_file():
        raise CheckpointError("run has no weights yet (model.safetensors is written at the first checkpoint)",
                              run_dir)
    try:
        return RunConfig.load(cfg_path)
    except ConfigError as e:
        raise CheckpointError(f"bad run config ({e})", cfg_path) from None


def load(run: str | Path, device: str = "cpu", *, precision: str | None = None) -> Pipeline:
    """Load a run folder (or shipped model name) for sampling: the Pipeline of its model kind
    (``kind_class(config.model_type).from_run(...)``).

    CheckpointError if it is not a run, its kind is unknown or its weights do not fit.
    ``precision``: autocast of the network calls: None/``fp32`` (the tested default), ``bf16``
    (fp32 where bf16 is not native: ``pipe.precision`` says what is used) or ``fp16`` (CUDA only;
    UsageError elsewhere).
    """
    import torch

    from synthkit.pipeline.registry import kind_class
    from synthkit.runtime.precision import sampling_precision

    run_dir = resolve_run(run)
    cfg = read_run_config(run_dir)
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA GPU is available")
    try:
        cls = kind_class(cfg.model_type)
    except UsageError as e:
        raise CheckpointError(f"bad run config ({e})", run_dir / "config.json") from None
    used = sampling_precision(precision, device)
    return cls.from_run(run_dir, cfg, str(device), None if used == "fp32" else used)
