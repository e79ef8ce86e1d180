"""Building a :class:`~synthkit.training.trainer.Trainer`: run-folder checks, the config fitted
to the cohort, the preprocessed data, model / EMA / optimizer / precision / generator, and
resuming from a checkpoint.

:class:`TrainerSetup` is the construction half of the trainer; the training half (steps,
checkpoints, previews, the loop) is :class:`~synthkit.training.trainer.Trainer`, which
subclasses it. Subclasses (the GAN trainer) override the hooks ``_setup``, ``_fit_config``,
``_resume_mismatch``, ``_check_dataset`` and ``_restore_rng``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from synthkit import noise as noise_rule
from synthkit.config import RunConfig
from synthkit.errors import UsageError
from synthkit.runtime import checkpoint as ckpt
from synthkit.runtime.ddp import DistInfo, barrier, init_distributed
from synthkit.training.configure import fit_config_to_cohort, same_architecture
from synthkit.training.ema import EMA
from synthkit.training.lr import lr_at
from synthkit.training.precision import resolve_training_precision
from synthkit.training.rng import generator_seed, restore_rng
from synthkit.training.runlog import RunLog


def _note_default(msg: str) -> None:
    import logging

    logging.getLogger("synthkit").warning(msg)


class TrainerSetup:
    """Builds everything for a run (see the module docstring); :class:`Trainer` trains it.

    ``cohort``: a cohort folder or a discovered ``Cohort``; ``run_dir``: the run folder;
    ``cache_dir``: where preprocessed cases are cached (default ``run_dir/cache``).
    ``progress``: a rich ``Progress`` (or None); ``on_note``: receives user-facing notes.
    """

    def __init__(self, cohort: Any, run_dir: str | Path, cfg: RunConfig, *, resume: bool = False,
                 device: str = "cpu", progress: Any = None, cache_dir: str | Path | None = None,
                 on_note: Callable[[str], None] | None = None, dist: DistInfo | None = None,
                 init: str | Path | None = None):
        self.run_dir = Path(run_dir)
        self._init = Path(init) if init is not None else None
        self.progress = progress
        self.note = on_note or _note_default
        self.dist = dist or init_distributed(device)
        self.device = self.dist.device
        self._setup(cohort, cfg, resume, cache_dir)

    # ------------------------------------------------------------------ setup
    def _setup(self, cohort: Any, cfg: RunConfig, resume: bool, cache_dir: str | Path | None) -> None:
        from synthkit.diffusion import GaussianDiffusion
        from synthkit.networks import build_denoiser

        d = self.dist
        cohort, latest = self._open_run(cohort, cfg, resume)
        cfg = self.cfg
        tc = cfg.train
        if tc.batch_size < 1 or tc.grad_accum < 1 or tc.steps < 1:
            raise UsageError("--steps, --batch-size and --grad-accum must be at least 1")
        factor = cfg.model.downsample_factor
        if any(int(s) % factor for s in cfg.preprocess.target_shape):
            raise UsageError(f"--shape {' '.join(map(str, cfg.preprocess.target_shape))} must be divisible by "
                             f"{factor} for this model (it halves the volume {len(cfg.model.channel_mults) - 1} times)")
        self._prepare_data(cohort, cache_dir)

        model = self._seeded_init(lambda: build_denoiser(cfg.model, cfg.model.image_channels,
                                                         cfg.model.mask_classes))
        if self._init is not None and latest is None:  # a resumed run has its own weights
            from synthkit.training.init import init_weights

            init_weights(model, cfg, self._init)
        self.model = model.to(self.device)
        self.ema = EMA(self.model, tc.ema_decay)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr_at(0, tc),
                                           weight_decay=tc.weight_decay)
        self.precision = resolve_training_precision(tc.precision, self.device)
        if self.precision.note and d.is_main:
            self.note(self.precision.note)
        self.scaler = self.precision.make_scaler()
        self.generator = noise_rule.cpu_generator(generator_seed(tc.seed, d.rank))  # same noise on any device
        self.diffusion = GaussianDiffusion(cfg.diffusion)
        if hasattr(self.diffusion, "to"):
            self.diffusion = self.diffusion.to(self.device)
        self._start_or_resume(resume, latest)

        self.ddp_model: torch.nn.Module = self.model
        if d.distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [d.local_rank] if self.device.startswith("cuda") else None
            self.ddp_model = DDP(self.model, device_ids=ids)

    def _open_run(self, cohort: Any, cfg: RunConfig, resume: bool) -> tuple[Any, Path | None]:
        """Device and run-folder checks, cohort discovery, the config fitted to the cohort
        (:meth:`_fit_config`) and, on resume, checked against the run's ``config.json``
        (:meth:`_resume_mismatch`). Sets ``self.cfg``; returns (cohort, latest checkpoint or None)."""
        from synthkit.io import discover_cohort

        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("--device cuda was requested but no CUDA GPU is available")
        latest = ckpt.latest_checkpoint(self.run_dir)
        cfg_path = self.run_dir / "config.json"
        if not resume and (latest is not None or (self.run_dir / "model.safetensors").exists()):
            raise UsageError("folder already holds a training run; pass --resume to continue it "
                             "or choose another --out", self.run_dir)
        if resume and latest is None:
            self.note("no checkpoint to resume from; starting at step 0")

        if not hasattr(cohort, "cases"):
            cohort = discover_cohort(cohort)
        cfg = self._fit_config(cfg, cohort)
        if self.dist.is_main and cfg.model_type in ("ddpm", "latent"):  # recipes are Med-DDPM settings
            from synthkit.recipes import demo_settings_note

            line = demo_settings_note(cfg.recipe, cfg.preset, cfg.train.steps, cfg.preprocess.target_shape,
                                      len(cohort.cases))
            if line:
                self.note(line)
        if resume and latest is not None and cfg_path.exists():
            why = self._resume_mismatch(RunConfig.load(cfg_path), cfg)
            if why:
                raise UsageError(f"cannot resume: {why}", cfg_path)
        self.cfg = cfg
        return cohort, latest

    def _fit_config(self, cfg: RunConfig, cohort: Any) -> RunConfig:
        """The config with channels and mask classes taken from the cohort (subclasses also validate)."""
        cfg = fit_config_to_cohort(cfg, cohort)
        tc = cfg.train
        if tc.label_weights is not None and len(tc.label_weights) != cfg.model.mask_classes:
            raise UsageError(f"--label-weight was given {len(tc.label_weights)} time(s); the run conditions on "
                             f"{cfg.model.mask_classes} label(s) {tuple(cfg.preprocess.mask_labels)}")
        if tc.label_weights is not None and min(tc.label_weights) <= 0:
            raise UsageError("--label-weight values must be positive")
        if cfg.model.cond_factor != 1 and cfg.model_type != "latent":
            raise UsageError("--cond-factor is for latent runs (with --autoencoder AE)")
        return cfg

    def _resume_mismatch(self, old: RunConfig, new: RunConfig) -> str:
        """Why a run saved with ``old`` cannot be resumed with ``new`` ("" if it can)."""
        return same_architecture(old, new)

    def _prepare_data(self, cohort: Any, cache_dir: str | Path | None) -> None:
        """Preprocess/cache the cohort into ``self.dataset`` (default cache ``run_dir/cache``),
        then, on rank 0, write ``config.json``, ``intensity.json`` and ``train_cohort.json``."""
        from synthkit.cache import cache_cohort
        from synthkit.io.atomic import write_json

        d = self.dist
        cache = Path(cache_dir) if cache_dir is not None else self.run_dir / "cache"
        if d.is_main:  # rank 0 fills the cache; the others then only read it
            self.dataset = cache_cohort(cohort, self.cfg.preprocess, cache, progress=self.progress)
        barrier(d)
        if not d.is_main:
            self.dataset = cache_cohort(cohort, self.cfg.preprocess, cache)
        if len(self.dataset) == 0:
            raise UsageError("no usable training cases in the cohort", cohort.root)
        self._check_dataset(cohort)
        if d.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.cfg.save(self.run_dir / "config.json")
            self._write_intensity()
            # where the training data lives (for the privacy/memorization check); a folder path only
            write_json(self.run_dir / "train_cohort.json",
                       {"path": str(Path(cohort.root).resolve()), "cases": len(self.dataset)})

    def _check_dataset(self, cohort: Any) -> None:
        """Hook: raise UsageError if ``self.dataset`` cannot be trained on (before anything is written)."""

    def _seeded_init(self, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
        """``build()`` under an RNG seeded from ``train.seed`` (deterministic init, global RNG untouched)."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.cfg.train.seed)
            return build()

    def _start_or_resume(self, resume: bool, latest: Path | None) -> None:
        """Open the run log; restore ``latest`` when resuming, else start at step 0."""
        self.start_step = 0
        self.elapsed = 0.0
        self.log = RunLog(self.run_dir / "log.jsonl")
        if resume and latest is not None:
            self._restore(latest)
        elif self.dist.is_main:
            self.log.truncate_after(0)

    def _write_intensity(self) -> None:
        """``intensity.json``: the cohort's median per-channel intensity bounds, used to map
        samples from [-1, 1] back to a typical intensity range (see synthkit.jobs.sample)."""
        from synthkit.io.atomic import write_json

        records = getattr(self.dataset, "records", None)
        if not records:
            return
        los = [r.lo for r in records if r.lo]
        his = [r.hi for r in records if r.hi]
        if not los:
            return
        lo = torch.tensor(los, dtype=torch.float64).median(dim=0).values.tolist()
        hi = torch.tensor(his, dtype=torch.float64).median(dim=0).values.tolist()
        write_json(self.run_dir / "intensity.json",
                   {"lo": lo, "hi": hi, "source": f"median over {len(los)} training cases"})

    #: how the checkpoint's ``model`` weights are named in error messages
    weights_label = "model weights"

    def _restore(self, path: Path) -> None:
        """Load checkpoint ``path`` into model, EMA, optimizer, scaler and RNG; continue its step."""
        state = ckpt.load_checkpoint(path)
        ckpt.restore_model_state(state, path, self.model, self.ema, self.optimizer, self.weights_label)
        if self.scaler is not None and state.scaler:
            self.scaler.load_state_dict(state.scaler)
        self._restore_rng(state)
        self.start_step = state.step
        self.elapsed = float(state.info.get("elapsed", 0.0))
        if self.dist.is_main:
            self.log.truncate_after(self.start_step)
            self.note(f"resuming from step {self.start_step} ({path.name})")

    def _restore_rng(self, state: ckpt.TrainingState) -> None:
        """This rank's training generator from the checkpoint (reseeded if it has none)."""
        rank = self.dist.rank
        if rank in state.rng:
            restore_rng(state.rng[rank], {"train": self.generator})
        else:
            self.generator.manual_seed(generator_seed(self.cfg.train.seed + state.step, rank))
            if self.dist.is_main or rank == len(state.rng):
                self.note(f"checkpoint has no RNG state for rank {rank} (different world size); "
                          "reseeded, so the run will not repeat bit for bit")
