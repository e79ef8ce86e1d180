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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from synthkit.config import RunConfig
from synthkit.errors import SynthkitError
from synthkit.runtime import checkpoint as ckpt
from synthkit.runtime.ddp import cleanup, gather_tensors, mean_scalar
from synthkit.training.data import StepBatchSampler
from synthkit.training.lr import lr_at, set_lr
from synthkit.training.rng import capture_rng
from synthkit.training.setup import TrainerSetup


class TrainingError(SynthkitError):
    """Training cannot go on (e.g. the loss became NaN)."""


class Trainer(TrainerSetup):
    """Builds everything for a run (:class:`~synthkit.training.setup.TrainerSetup`), then
    :meth:`run` trains. Use :func:`synthkit.training.train` for one call.

    ``cohort``: a cohort folder or a discovered ``Cohort``; ``run_dir``: the run folder;
    ``cache_dir``: where preprocessed cases are cached (default ``run_dir/cache``).
    ``progress``: a rich ``Progress`` (or None); ``on_note``: receives user-facing notes.
    """

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
            weight = label_weight_map(batch, tc.label_weights, self.device)
            with sync:
                with self.precision.autocast():
                    loss = self.diffusion.training_loss(self.ddp_model, x0, cond, generator=self.generator,
                                                        weight=weight, cond_drop=tc.cond_drop)
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


def label_weight_map(batch: dict[str, Any], label_weights: Sequence[float] | None, device: Any) -> torch.Tensor | None:
    """Per-voxel loss weights ``(B, 1, d, h, w)`` on the loss grid, ``1 + sum_k (w_k - 1) * frac_k``,
    from ``batch["frac"]`` (each label's fraction of the voxel: latent runs) or the one-hot
    ``batch["cond"]`` (pixel runs); None without label weights."""
    if not label_weights:
        return None
    frac = batch.get("frac", batch["cond"]).to(device, torch.float32)
    if frac.shape[1] != len(label_weights):
        raise ValueError(f"label_weights has {len(label_weights)} value(s), the mask {frac.shape[1]} label(s)")
    w = torch.tensor([float(v) - 1.0 for v in label_weights], device=device).view(1, -1, 1, 1, 1)
    return 1.0 + (frac * w).sum(1, keepdim=True)


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
