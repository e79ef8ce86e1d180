"""A trained model, loaded for sampling: ``synthkit.load(run) -> Generator``.

A run folder (written by ``synthkit train``) holds ``config.json`` (a :class:`RunConfig`),
``model.safetensors`` (EMA weights) and optionally ``intensity.json`` (the training cohort's
median per-channel intensity bounds). :func:`load` rebuilds the denoiser from the config,
loads the EMA weights safely (safetensors, never pickle) and returns a :class:`Generator`::

    gen = synthkit.load("runs/demo")
    vol = gen.sample(mask_volume, seed=0, sampler="ddim", steps=50)   # Volume on the mask's grid

Intensities of generated volumes: the network works in [-1, 1]; samples are mapped to the
training cohort's typical range (``intensity.json``: per channel, the median over training
cases of the ``clip_percentiles`` bounds inside the head), so -1 becomes that ``lo`` and +1
``hi``. Without ``intensity.json`` the output is scaled to [0, 1].
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthkit.config import ConfigError, RunConfig
from synthkit.errors import CheckpointError, UsageError

#: Where shipped/downloaded models are looked up by name (``synthkit.load("demo")``).
MODEL_DIRS_ENV = "SYNTHKIT_MODELS"


def _model_dirs() -> list[Path]:
    dirs = [Path(p) for p in os.environ.get(MODEL_DIRS_ENV, "").split(os.pathsep) if p]
    dirs.append(Path(__file__).parent / "assets" / "models")
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


def seed_for(seed: int, case_id: str, k: int) -> int:
    """The seed of volume ``k`` generated for mask ``case_id`` under run seed ``seed``.

    Derived from the case id (not its position), so a mask sampled alone gets the same seed as
    within any set of masks.
    """
    h = hashlib.sha256(f"synthkit:{int(seed)}:{case_id}:{int(k)}".encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class Generator:
    """A loaded model: config, EMA denoiser (eval mode), diffusion schedule, preprocessing.

    Attributes: ``run_dir``, ``config`` (:class:`RunConfig`), ``model``, ``diffusion``,
    ``device``, ``intensity`` (``{"lo": [...], "hi": [...]}`` per channel), ``weights_sha256``.
    """

    def __init__(self, run_dir: Path, config: RunConfig, model: torch.nn.Module, diffusion: Any,
                 device: str, intensity: dict[str, list[float]], weights_sha256: str,
                 precision: str | None = None):
        self.run_dir = run_dir
        self.config = config
        self.model = model
        self.diffusion = diffusion
        self.device = device
        self.intensity = intensity
        self.weights_sha256 = weights_sha256
        self.precision = precision

    @property
    def preprocess(self):
        return self.config.preprocess

    @property
    def image_channels(self) -> int:
        return self.config.model.image_channels

    def __repr__(self) -> str:
        m = self.config.model
        return (f"Generator(run={str(self.run_dir)!r}, preset={self.config.preset!r}, channels={m.image_channels}, "
                f"mask_labels={self.preprocess.mask_labels}, shape={self.preprocess.target_shape}, "
                f"device={self.device!r})")

    # -------------------------------------------------------------- pieces
    def head_values(self) -> set[int]:
        """Label values that cover the whole head/brain (background option, see :meth:`prepare`)."""
        from synthkit.training.preview import HEAD_NAMES

        vals = {int(v) for k, v in self.config.data.labels.items() if k.lower() in HEAD_NAMES and int(v) != 0}
        if self.preprocess.brain_label is not None:
            vals.add(int(self.preprocess.brain_label))
        return vals

    def prepare(self, mask: Any, label_space: str = "raw") -> tuple[torch.Tensor, Any, bool]:
        """Mask Volume ``(1, D, H, W)`` -> (cond ``(K, d, h, w)``, GridRecord, has_head).

        ``label_space``: ``"raw"`` (default) for masks labelled like the training cohort's
        files (``label_map`` is applied); ``"network"`` for masks already in the network's
        label values (``config.data.labels``, e.g. BraTS masks that carry the brain label 4
        after ET was mapped to 3): ``label_map`` is not applied again.
        ``has_head`` is True when a head/brain label is present in the mask: then voxels where
        the one-hot mask is all zero are outside the head, and the sampler's ``background``
        option may hold them at -1.
        """
        from synthkit.preprocess import one_hot, preprocess_case

        if label_space not in ("raw", "network"):
            raise UsageError(f"label_space must be 'raw' or 'network', not {label_space!r}")
        cfg = self.preprocess if label_space == "raw" else dataclasses.replace(self.preprocess, label_map=None)
        pre = preprocess_case(None, mask, cfg)
        cond = one_hot(pre.labels, tuple(self.preprocess.mask_labels))
        present = set(torch.unique(pre.labels).tolist())
        return cond, pre.record, bool(self.head_values() & present)

    @torch.no_grad()
    def sample_network(self, cond: torch.Tensor, seeds: Sequence[int], *, sampler: str = "ddpm",
                       steps: int | None = None, eta: float = 0.0, background: Sequence[bool] | None = None,
                       progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
        """``cond`` ``(N, K, d, h, w)`` -> ``(N, C, d, h, w)`` in [-1, 1] on the CPU.

        Volume ``i`` depends only on ``cond[i]`` and ``seeds[i]`` (its own generator), never on
        the rest of the batch.
        """
        from synthkit.diffusion import sample

        if cond.ndim != 5 or cond.shape[0] != len(seeds):
            raise ValueError(f"cond must be (N, K, D, H, W) with N = len(seeds), got {tuple(cond.shape)}")
        outs = []
        for i, s in enumerate(seeds):  # one generator per volume: batch-independent results
            c = cond[i : i + 1].to(self.device)
            bg = (c.sum(dim=1, keepdim=True) == 0) if background is not None and background[i] else None
            g = torch.Generator(device=self.device).manual_seed(int(s))
            out = sample(self.model, self.diffusion, c, sampler=sampler, steps=steps, eta=eta, generator=g,
                         image_channels=self.image_channels, background=bg, progress=progress,
                         autocast=self.precision)
            outs.append(out.float().cpu())
        return torch.cat(outs, 0)

    def to_volume(self, x: torch.Tensor, record: Any) -> Any:
        """Network-grid sample ``(C, d, h, w)`` in [-1, 1] -> Volume on the mask's own grid,
        intensities mapped to the training cohort's range (or [0, 1])."""
        from synthkit.preprocess import to_original_grid

        c = int(x.shape[0])
        lo = self.intensity.get("lo") or [0.0] * c
        hi = self.intensity.get("hi") or [1.0] * c
        record = dataclasses.replace(record, lo=tuple(float(v) for v in lo[:c]), hi=tuple(float(v) for v in hi[:c]))
        return to_original_grid(x, record)

    # -------------------------------------------------------------- one call
    def sample(self, mask: Any, *, seed: int = 0, sampler: str = "ddpm", steps: int | None = None,
               eta: float = 0.0, background: bool | None = None, affine: np.ndarray | None = None,
               label_space: str = "raw", progress: Callable[[int, int], None] | None = None) -> Any:
        """Generate one volume for ``mask``; returns a ``Volume`` ``(C, D, H, W)`` float32 on the
        mask's own grid and affine.

        ``mask``: a label ``Volume`` ``(1, D, H, W)``, a NIfTI path, or an integer array
        ``(D, H, W)`` (with ``affine``, default identity). ``sampler``: ``"ddpm"`` (all T steps,
        the paper) or ``"ddim"`` (``steps`` of them). ``background``: hold the predicted x0 at
        -1 outside the head (where the one-hot mask is all zero); default: on when the mask
        holds a head/brain label. ``label_space``: see :meth:`prepare`. Same arguments and
        seed -> bit-identical output.
        """
        from synthkit.io.volume import Volume

        if isinstance(mask, (str, Path)):
            from synthkit.io.nifti import read_nifti

            mask = read_nifti(mask, is_label=True)
        elif isinstance(mask, np.ndarray) or torch.is_tensor(mask):
            arr = np.asarray(mask.cpu() if torch.is_tensor(mask) else mask)
            if arr.ndim == 3:
                arr = arr[None]
            mask = Volume(arr.astype(np.int16), np.eye(4) if affine is None else affine)
        cond, record, has_head = self.prepare(mask, label_space)
        use_bg = has_head if background is None else bool(background)
        x = self.sample_network(cond[None], [seed], sampler=sampler, steps=steps, eta=eta,
                                background=[use_bg], progress=progress)
        return self.to_volume(x[0], record)


def load(run: str | Path, device: str = "cpu", *, precision: str | None = None) -> Generator:
    """Load a run folder (or shipped model name) for sampling. CheckpointError if it is not one."""
    from synthkit.diffusion import GaussianDiffusion
    from synthkit.networks import build_denoiser
    from synthkit.training.checkpoint import check_state_dict, load_weights

    run_dir = resolve_run(run)
    cfg_path = run_dir / "config.json"
    weights = run_dir / "model.safetensors"
    if not cfg_path.is_file():
        raise CheckpointError("not a run folder: config.json is missing", run_dir)
    if not weights.is_file():
        raise CheckpointError("run has no weights yet (model.safetensors is written at the first checkpoint)",
                              run_dir)
    try:
        cfg = RunConfig.load(cfg_path)
    except ConfigError as e:
        raise CheckpointError(f"bad run config ({e})", cfg_path) from None
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was requested but no CUDA GPU is available")
    state = load_weights(weights)
    gan = cfg.model_type != "ddpm"  # a GAN baseline (synthkit.training.gan): one generator pass
    if gan:
        from synthkit.training.gan import (
            GAN_TYPES,
            GanGenerator,
            SinglePass,
            build_sampling_network,
        )

        if cfg.model_type not in GAN_TYPES:
            raise CheckpointError(f"bad run config (unknown model_type {cfg.model_type!r})", cfg_path)
    with torch.random.fork_rng(devices=[]):
        model = build_sampling_network(cfg) if gan else build_denoiser(cfg.model)
    check_state_dict(model, state, weights, "EMA weights")
    model.load_state_dict(state)
    model = model.to(device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    intensity: dict[str, list[float]] = {}
    ipath = run_dir / "intensity.json"
    if ipath.is_file():
        try:
            data = json.loads(ipath.read_text())
            intensity = {"lo": [float(v) for v in data["lo"]], "hi": [float(v) for v in data["hi"]]}
        except (ValueError, KeyError, TypeError):
            raise CheckpointError("intensity.json is malformed", ipath) from None
    if gan:
        return GanGenerator(run_dir, cfg, model, SinglePass(), str(device), intensity, file_sha256(weights))
    return Generator(run_dir, cfg, model, GaussianDiffusion(cfg.diffusion), str(device), intensity,
                     file_sha256(weights), precision)
