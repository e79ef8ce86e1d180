"""The training loop (Med-DDPM, Algorithm 1) with EMA, accumulation, clipping, mixed precision,
DDP, atomic checkpoints and exact resume.

One optimizer step::

    for each of grad_accum micro-batches (this rank's share, see synthkit.training.data):
        x0 = batch["image"]  (B, C, D, H, W) in [-1, 1];  cond = batch["cond"]  (B, K, D, H, W)
        loss = diffusion.training_loss(model, x0, cond, generator=g) / grad_accum;  backward
    clip grad norm; optimizer step (AdamW, lr from synthkit.training.lr); EMA update

Everything random is explicit: the model is initialised under a forked RNG seeded from
``train.seed``; noise and timesteps come from a per-rank ``torch.Generator``; the data order
is a pure function of (seed, step). A checkpoint stores model, EMA, optimizer, loss scaler,
step and every rank's RNG states, so ``--resume`` continues exactly (bit-identical on CPU).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from synthkit.config import RunConfig
from synthkit.errors import SynthkitError, UsageError
from synthkit.training import checkpoint as ckpt
from synthkit.training.configure import fit_config_to_cohort, same_architecture
from synthkit.training.data import StepBatchSampler
from synthkit.training.ddp import (
    DistInfo,
    barrier,
    cleanup,
    gather_tensors,
    init_distributed,
    mean_scalar,
)
from synthkit.training.ema import EMA
from synthkit.training.lr import lr_at, set_lr
from synthkit.training.precision import resolve_training_precision
from synthkit.training.rng import capture_rng, restore_rng
from synthkit.training.runlog import RunLog


class TrainingError(SynthkitError):
    """Training cannot go on (e.g. the loss became NaN)."""


def _gen_seed(seed: int, rank: int) -> int:
    return (int(seed) * 1_000_003 + rank * 7_919 + 17) % 2**63


def _note_default(msg: str) -> None:
    import logging

    logging.getLogger("synthkit").warning(msg)


class Trainer:
    """Builds everything for a run, then :meth:`run` trains. Use :func:`train` for one call.

    ``cohort``: a cohort folder or a discovered ``Cohort``; ``run_dir``: the run folder;
    ``cache_dir``: where preprocessed cases are cached (default ``run_dir/cache``).
    ``progress``: a rich ``Progress`` (or None); ``on_note``: receives user-facing notes.
    """

    def __init__(self, cohort: Any, run_dir: str | Path, cfg: RunConfig, *, resume: bool = False,
                 device: str = "cpu", progress: Any = None, cache_dir: str | Path | None = None,
                 on_note: Callable[[str], None] | None = None, dist: DistInfo | None = None):
        self.run_dir = Path(run_dir)
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
        self.model = model.to(self.device)
        self.ema = EMA(self.model, tc.ema_decay)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=lr_at(0, tc),
                                           weight_decay=tc.weight_decay)
        self.precision = resolve_training_precision(tc.precision, self.device)
        if self.precision.note and d.is_main:
            self.note(self.precision.note)
        self.scaler = self.precision.make_scaler()
        self.generator = torch.Generator(device=self.device).manual_seed(_gen_seed(tc.seed, d.rank))
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
        if resume and latest is not None and cfg_path.exists():
            why = self._resume_mismatch(RunConfig.load(cfg_path), cfg)
            if why:
                raise UsageError(f"cannot resume: {why}", cfg_path)
        self.cfg = cfg
        return cohort, latest

    def _fit_config(self, cfg: RunConfig, cohort: Any) -> RunConfig:
        """The config with channels and mask classes taken from the cohort (subclasses also validate)."""
        return fit_config_to_cohort(cfg, cohort)

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
        samples from [-1, 1] back to a typical intensity range (see synthkit.generate)."""
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
        ckpt.check_state_dict(self.model, state.model, path, self.weights_label)
        ckpt.check_state_dict(self.ema.model, state.ema, path, "EMA weights")
        self.model.load_state_dict(state.model)
        self.ema.load_state_dict(state.ema, state.ema_updates)
        try:
            self.optimizer.load_state_dict(state.optimizer)
        except (ValueError, KeyError, RuntimeError) as e:
            raise ckpt.CheckpointError(f"optimizer state does not fit the model ({e})", path) from None
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
            self.generator.manual_seed(_gen_seed(self.cfg.train.seed + state.step, rank))
            if self.dist.is_main or rank == len(state.rng):
                self.note(f"checkpoint has no RNG state for rank {rank} (different world size); "
                          "reseeded, so the run will not repeat bit for bit")

    # ------------------------------------------------------------------ saving
    def save_checkpoint(self, step: int) -> None:
        """Collective: every rank contributes its RNG state; rank 0 writes the files."""
        states = capture_rng({"train": self.generator})
        rng: dict[int, dict[str, torch.Tensor]] = {}
        for name in sorted(states):
            for r, t in enumerate(gather_tensors(states[name], self.dist)):
                rng.setdefault(r, {})[name] = t
        if not self.dist.is_main:
            return
        info = {"elapsed": self.elapsed, "world_size": self.dist.world_size, "config": dataclasses.asdict(self.cfg)}
        state = ckpt.TrainingState(
            step=step, model=self.model.state_dict(), ema=self.ema.state_dict(),
            ema_updates=self.ema.num_updates, optimizer=self.optimizer.state_dict(), rng=rng,
            scaler=self.scaler.state_dict() if self.scaler is not None else None, info=info)
        self._write_checkpoint(step, state)

    def _write_checkpoint(self, step: int, state: ckpt.TrainingState, **meta: str) -> None:
        """Write ``state`` as the step's checkpoint and the EMA weights as ``model.safetensors``
        (metadata ``step``, ``kind`` and ``meta``); keep the two newest checkpoints."""
        ckpt.save_checkpoint(ckpt.checkpoint_path(self.run_dir, step), state)
        ckpt.save_weights(self.run_dir / "model.safetensors", self.ema.state_dict(),
                          {"step": step, "kind": "ema", **meta})
        ckpt.prune_checkpoints(self.run_dir, keep=2)

    def _preview(self, step: int) -> None:
        from synthkit.training.preview import has_head_label, write_preview

        try:
            write_preview(self.ema.model, self.diffusion, self.dataset[0],
                          self.run_dir / "previews" / f"step_{step:08d}.png", step=step,
                          device=self.device, seed=self.cfg.train.seed,
                          use_background=has_head_label(self.cfg.data.labels, self.cfg.preprocess.brain_label))
        except ImportError as e:  # viz not installed: training matters more than pictures
            self.note(f"preview skipped ({e})")

    # ------------------------------------------------------------------ loop
    def _loader(self):
        tc = self.cfg.train
        sampler = StepBatchSampler(len(self.dataset), batch_size=tc.batch_size, grad_accum=tc.grad_accum,
                                   seed=tc.seed, start_step=self.start_step, total_steps=tc.steps,
                                   rank=self.dist.rank, world_size=self.dist.world_size)
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, num_workers=tc.num_workers,
                                           pin_memory=self.device.startswith("cuda"))

    def train_step(self, step: int, batches) -> float:
        """One optimizer step over ``grad_accum`` micro-batches; returns the mean loss (this rank)."""
        tc = self.cfg.train
        set_lr(self.optimizer, lr_at(step, tc))
        total = torch.zeros((), device=self.device)
        for micro in range(tc.grad_accum):
            batch = next(batches)
            x0 = batch["image"].to(self.device, non_blocking=True)
            cond = batch["cond"].to(self.device, non_blocking=True)
            last = micro == tc.grad_accum - 1
            sync = contextlib.nullcontext() if last or not self.dist.distributed else self.ddp_model.no_sync()
            with sync:
                with self.precision.autocast():
                    loss = self.diffusion.training_loss(self.ddp_model, x0, cond, generator=self.generator)
                scaled = loss.float() / tc.grad_accum
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total += loss.detach().float()
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        return float(total.item()) / tc.grad_accum

    def _lr(self, step: int) -> float:
        """Learning rate of 0-based step ``step``."""
        return lr_at(step, self.cfg.train)

    def _step_losses(self, step: int, batches) -> dict[str, float]:
        """One training step; returns the logged loss terms (TrainingError if one is not finite)."""
        loss = mean_scalar(self.train_step(step, batches), self.dist)
        if not math.isfinite(loss):
            raise TrainingError(f"the loss became {loss} at step {step + 1}; "
                                "try a lower --lr or --precision fp32")
        return {"loss": loss}

    def _task_name(self) -> str:
        return "train"

    def _describe(self, step: int, losses: dict[str, float], images_per_s: float) -> str:
        """The progress bar's text after ``step`` steps."""
        return f"train loss {losses['loss']:.4f} lr {self._lr(step - 1):.1e} {images_per_s:.1f} img/s"

    def run(self, stop_at: int | None = None) -> Path:
        """Train from the current step to ``cfg.train.steps`` (or stop after ``stop_at`` steps,
        checkpointing there, as if interrupted). Returns the run folder."""
        tc, d = self.cfg.train, self.dist
        end = tc.steps if stop_at is None else min(stop_at, tc.steps)
        task = None
        if self.progress is not None and d.is_main:
            task = self.progress.add_task(self._task_name(), total=tc.steps, completed=self.start_step)
        images_per_step = tc.batch_size * tc.grad_accum * d.world_size
        batches = iter(self._loader())
        self.model.train()
        step = self.start_step
        try:
            while step < end:
                t0 = time.perf_counter()
                losses = self._step_losses(step, batches)
                step += 1
                dt = time.perf_counter() - t0
                self.elapsed += dt
                if d.is_main and (step % max(1, tc.log_every) == 0 or step == end):
                    self.log.write({"step": step, **losses, "lr": self._lr(step - 1),
                                    "time": round(self.elapsed, 4), "images_per_s": images_per_step / max(dt, 1e-9),
                                    "epoch": (step * images_per_step) / len(self.dataset)})
                if (step % max(1, tc.checkpoint_every) == 0) or step == end:
                    self.save_checkpoint(step)
                if d.is_main and tc.preview_every and step % tc.preview_every == 0:
                    self._preview(step)
                if task is not None:
                    self.progress.update(task, completed=step,
                                         description=self._describe(step, losses, images_per_step / max(dt, 1e-9)))
        finally:
            self.log.close()
        self.start_step = step
        return self.run_dir

    def close(self) -> None:
        cleanup(self.dist)


def _default_progress() -> Any:
    import sys

    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=Console(stderr=True), disable=not sys.stderr.isatty())


def train(cohort: Any, run_dir: str | Path, cfg: RunConfig | None = None, *, resume: bool = False,
          device: str = "cpu", progress: Any = True, cache_dir: str | Path | None = None,
          on_note: Callable[[str], None] | None = None) -> Path:
    """Train a Med-DDPM model on ``cohort`` into ``run_dir`` (see module docstring); returns ``run_dir``.

    ``cfg``: a :class:`RunConfig` (default: the ``small`` preset, other settings default);
    channels and mask classes are taken from the cohort. ``progress``: True for a rich
    progress bar on a terminal, False/None for none, or your own rich ``Progress``.
    Works the same under ``torchrun`` (DDP): every rank calls it; rank 0 writes the files.
    """
    if cfg is None:
        from synthkit.config import model_config

        cfg = RunConfig(model=model_config("small"), preset="small")
    if cfg.model_type != "ddpm":
        from synthkit.training.gan import train_gan

        return train_gan(cohort, run_dir, cfg, resume=resume, device=device, progress=progress,
                         cache_dir=cache_dir, on_note=on_note)
    return run_trainer(Trainer, cohort, run_dir, cfg, resume=resume, device=device, progress=progress,
                       cache_dir=cache_dir, on_note=on_note)


def run_trainer(trainer_cls: type[Trainer], cohort: Any, run_dir: str | Path, cfg: RunConfig, *,
                resume: bool, device: str, progress: Any, cache_dir: str | Path | None,
                on_note: Callable[[str], None] | None) -> Path:
    """Build ``trainer_cls`` (``progress`` as in :func:`train`), run it to the end, clean up."""
    own = progress is True
    bar = _default_progress() if own else (progress or None)
    trainer = trainer_cls(cohort, run_dir, cfg, resume=resume, device=device, progress=bar,
                          cache_dir=cache_dir, on_note=on_note)
    try:
        if own:
            with bar:
                return trainer.run()
        return trainer.run()
    finally:
        trainer.close()
