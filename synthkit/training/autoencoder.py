"""Training the KL autoencoder of latent Med-DDPM (see synthkit.networks.autoencoder).

One optimizer step::

    x = random crops (B, C, c, c, c) of the preprocessed cohort, each meeting the head
    recon, mean, logvar = model(x, generator=g)          (z = mean + sigma * eps)
    loss = L1(recon, x) + kl_weight * KL(mean, logvar)
    clip grad norm; Adam step (lr from synthkit.training.lr); EMA update

The cohort is preprocessed once at ``preprocess.target_shape`` (intensities in [-1, 1], the
same PreprocessConfig as diffusion training) and cached (synthkit.cache). Crops and the
posterior noise come from one seeded ``torch.Generator``; a checkpoint stores model, EMA,
optimizer, step, elapsed time and that generator, so ``resume`` continues bit for bit.

Run folder: ``config.json`` (an :class:`~synthkit.config.AutoencoderRunConfig`, with the
measured ``scale_factor``), ``model.safetensors`` (EMA weights; metadata ``step`` and
``scale_factor``), ``log.jsonl``, ``previews/step_XXXXXXXX.png``, ``checkpoint/`` (two newest),
``train_cohort.json``, ``cache/``.

``init=AE`` starts from another autoencoder run's EMA weights; with ``cfg.freeze_encoder`` only
the decoder trains (encoder weights, EMA included, stay bit-identical and the scale factor is
kept), so a latent denoiser trained on the first autoencoder's latents works with the new decoder.
A mask-reading decoder (``mask_channels``) may grow from a mask-free ``init``: its mask convs start
at zero, and each step's crops bring their one-hot masks (no extra random draws).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from synthkit import noise as noise_rule
from synthkit.config import AutoencoderRunConfig, RunConfig, to_dict
from synthkit.errors import SynthkitError, UsageError
from synthkit.runtime import checkpoint as ckpt
from synthkit.training.autoencoder_data import (
    check_crop,
    head_boxes,
    measure_scale_factor,
    sample_crops,
)
from synthkit.training.ema import EMA
from synthkit.training.lr import lr_at, set_lr
from synthkit.training.precision import resolve_training_precision
from synthkit.training.rng import capture_rng, restore_rng
from synthkit.training.runlog import RunLog

SCALE_CASES_CHECKPOINT = 2  # cases used for the scale factor at intermediate checkpoints
SCALE_CASES_FINAL = 8  # ... and at the end of the run


class AutoencoderTrainingError(SynthkitError):
    """Training cannot go on (e.g. the loss became NaN)."""


def _note_default(msg: str) -> None:
    import logging

    logging.getLogger("synthkit").warning(msg)


def fit_autoencoder_config(cfg: AutoencoderRunConfig, cohort: Any) -> AutoencoderRunConfig:
    """``cfg`` with channel names, labels and mask labels taken from ``cohort`` (as for diffusion
    training, so the two share one preprocessing cache) and ``image_channels`` set."""
    from synthkit.training.configure import fit_config_to_cohort

    fitted = fit_config_to_cohort(RunConfig(preprocess=cfg.preprocess, data=cfg.data), cohort)
    k = len(fitted.preprocess.mask_labels) if cfg.autoencoder.mask_channels else 0
    ae = dataclasses.replace(cfg.autoencoder, image_channels=fitted.model.image_channels, mask_channels=k)
    return dataclasses.replace(cfg, autoencoder=ae, preprocess=fitted.preprocess, data=fitted.data)


def resume_mismatch(old: AutoencoderRunConfig, new: AutoencoderRunConfig) -> str:
    """Why a run saved with ``old`` cannot continue with ``new`` ("" if it can)."""
    for part in ("autoencoder", "preprocess", "data"):
        if getattr(old, part) != getattr(new, part):
            return f"the {part} settings differ from the run's config.json"
    return ""


class AutoencoderTrainer:
    """Builds everything for an autoencoder run; :meth:`run` trains. ``cohort``: a folder or a
    discovered ``Cohort``; ``progress``: a rich ``Progress`` or None; ``on_note``: user notes."""

    def __init__(self, cohort: Any, run_dir: str | Path, cfg: AutoencoderRunConfig, *, resume: bool = False,
                 device: str = "cpu", progress: Any = None, cache_dir: str | Path | None = None,
                 on_note: Callable[[str], None] | None = None, init: str | Path | None = None):
        from synthkit.io import discover_cohort
        from synthkit.recipes import demo_settings_note

        self.run_dir = Path(run_dir)
        self.device = device
        self.progress = progress
        self.note = on_note or _note_default
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise UsageError("--device cuda was requested but no CUDA GPU is available")
        latest = self._check_folder(resume)
        if not hasattr(cohort, "cases"):
            cohort = discover_cohort(cohort)
        self.cfg = fit_autoencoder_config(cfg, cohort)
        line = demo_settings_note(self.cfg.recipe, self.cfg.preset, self.cfg.train.steps,
                                  self.cfg.preprocess.target_shape, len(cohort.cases), any_grid=True)
        if line:
            self.note(line)
        continuing = resume and latest is not None
        if self.cfg.freeze_encoder and init is None and not continuing:
            raise UsageError("--freeze-encoder trains a decoder for an existing encoder: give it with --init AE")
        self._validate(resume, latest)
        if init is not None and not continuing:
            self._read_init(Path(init))
        self._prepare_data(cohort, cache_dir)
        self._build()
        self.start_step, self.elapsed = 0, 0.0
        self.log = RunLog(self.run_dir / "log.jsonl")
        if continuing:
            self._restore(latest)
        else:
            if init is not None:  # a mask-reading decoder grown from a mask-free one keeps its zero mask convs
                state = {**self.model.state_dict(), **self._init_state}
                self.model.load_state_dict(state)
                self.ema.model.load_state_dict(state)
            self.log.truncate_after(0)

    # ------------------------------------------------------------------ setup
    def _check_folder(self, resume: bool) -> Path | None:
        latest = ckpt.latest_checkpoint(self.run_dir)
        if not resume and (latest is not None or (self.run_dir / "model.safetensors").exists()):
            raise UsageError("folder already holds a training run; pass --resume to continue it "
                             "or choose another --out", self.run_dir)
        if resume and latest is None:
            self.note("no checkpoint to resume from; starting at step 0")
        return latest

    def _validate(self, resume: bool, latest: Path | None) -> None:
        cfg, tc = self.cfg, self.cfg.train
        if tc.batch_size < 1 or tc.steps < 1:
            raise UsageError("--steps and --batch-size must be at least 1")
        if cfg.kl_weight < 0 or cfg.decoder_noise < 0:
            raise UsageError("the KL weight and --decoder-noise must be >= 0")
        if cfg.decoder_noise > 0 and not cfg.freeze_encoder:
            raise UsageError("--decoder-noise goes with --init AE --freeze-encoder (noise in that encoder's latent units)")
        factor = cfg.autoencoder.downsample_factor
        shape = tuple(int(s) for s in cfg.preprocess.target_shape)
        if any(s % factor for s in shape):
            raise UsageError(f"--shape {' '.join(map(str, shape))} must be divisible by {factor} "
                             f"(the autoencoder halves the volume {len(cfg.autoencoder.channels) - 1} times)")
        check_crop(cfg.crop, shape, factor)
        cfg_path = self.run_dir / "config.json"
        if resume and latest is not None and cfg_path.exists():
            why = resume_mismatch(AutoencoderRunConfig.load(cfg_path), cfg)
            if why:
                raise UsageError(f"cannot resume: {why}", cfg_path)

    def _read_init(self, ae_dir: Path) -> None:
        """Start from the EMA weights of autoencoder run ``ae_dir`` (same architecture); with
        ``freeze_encoder`` its scale factor is kept, since its latents are kept."""
        from synthkit.io.hashing import file_sha256
        from synthkit.training.autoencoder_eval import load_autoencoder

        model, icfg = load_autoencoder(ae_dir)
        grown = dataclasses.replace(icfg.autoencoder, mask_channels=self.cfg.autoencoder.mask_channels)
        if icfg.autoencoder.mask_channels not in (0, self.cfg.autoencoder.mask_channels) or grown != self.cfg.autoencoder:
            raise UsageError("--init: that autoencoder's architecture differs from this run's", ae_dir / "config.json")
        self._init_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        scale = icfg.scale_factor if self.cfg.freeze_encoder else self.cfg.scale_factor
        self.cfg = dataclasses.replace(self.cfg, scale_factor=scale,
                                       init_sha256=file_sha256(ae_dir / "model.safetensors"))

    def _prepare_data(self, cohort: Any, cache_dir: str | Path | None) -> None:
        from synthkit.cache import cache_cohort
        from synthkit.io.atomic import write_json

        cache = Path(cache_dir) if cache_dir is not None else self.run_dir / "cache"
        self.dataset = cache_cohort(cohort, self.cfg.preprocess, cache, progress=self.progress)
        if self.dataset.images is None:
            raise UsageError("the cohort has no images (an autoencoder needs them)", cohort.root)
        self.images = self.dataset.images
        self.boxes = head_boxes(self.dataset.labels)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.cfg.save(self.run_dir / "config.json")
        write_json(self.run_dir / "train_cohort.json",
                   {"path": str(Path(cohort.root).resolve()), "cases": len(self.dataset)})

    def _build(self) -> None:
        from synthkit.networks.autoencoder import build_autoencoder

        tc = self.cfg.train
        with torch.random.fork_rng(devices=[]):  # deterministic init; the global RNG is untouched
            torch.manual_seed(tc.seed)
            model = build_autoencoder(self.cfg.autoencoder)
        if self.cfg.freeze_encoder:
            model.encoder.requires_grad_(False)
        self.model = model.to(self.device)
        self.ema = EMA(self.model, tc.ema_decay)
        self.optimizer = torch.optim.Adam([p for p in self.model.parameters() if p.requires_grad], lr=lr_at(0, tc))
        self.precision = resolve_training_precision(tc.precision, self.device)
        if self.precision.used == "fp16":
            raise UsageError("--precision fp16 is not supported for the autoencoder; use fp32 or bf16")
        if self.precision.note:
            self.note(self.precision.note)
        self.generator = noise_rule.cpu_generator((int(tc.seed) * 1_000_003 + 29) % 2**63)

    def _restore(self, path: Path) -> None:
        state = ckpt.load_checkpoint(path)
        ckpt.restore_model_state(state, path, self.model, self.ema, self.optimizer, "autoencoder weights")
        if 0 not in state.rng:
            raise ckpt.CheckpointError("checkpoint has no RNG state", path)
        restore_rng(state.rng[0], {"train": self.generator})
        self.start_step = state.step
        self.elapsed = float(state.info.get("elapsed", 0.0))
        self.log.truncate_after(self.start_step)
        self.note(f"resuming from step {self.start_step} ({path.name})")

    # ------------------------------------------------------------------ saving
    def save_checkpoint(self, step: int, scale_cases: int = SCALE_CASES_CHECKPOINT) -> None:
        """The step's checkpoint, EMA weights as ``model.safetensors`` with the latent scale factor
        (measured on ``scale_cases`` training volumes) and config.json with that factor."""
        rng = {0: capture_rng({"train": self.generator})}
        state = ckpt.TrainingState(step=step, model=self.model.state_dict(), ema=self.ema.state_dict(),
                                   ema_updates=self.ema.num_updates, optimizer=self.optimizer.state_dict(),
                                   rng=rng, info={"elapsed": self.elapsed, "config": to_dict(self.cfg)})
        ckpt.save_checkpoint(ckpt.checkpoint_path(self.run_dir, step), state)
        scale = self.cfg.scale_factor if self.cfg.freeze_encoder else measure_scale_factor(
            self.ema.model, self.images, device=self.device, max_cases=scale_cases, autocast=self.precision.autocast)
        self.cfg = dataclasses.replace(self.cfg, scale_factor=scale)
        ckpt.save_weights(self.run_dir / "model.safetensors", self.ema.state_dict(),
                          {"step": step, "kind": "ema", "model": "autoencoder", "scale_factor": scale})
        self.cfg.save(self.run_dir / "config.json")
        ckpt.prune_checkpoints(self.run_dir, keep=2)

    def _preview(self, step: int) -> None:
        from synthkit.training.autoencoder_preview import write_reconstruction_preview

        try:
            write_reconstruction_preview(self.ema.model, self.dataset[len(self.dataset) - 1],
                                         self.run_dir / "previews" / f"step_{step:08d}.png", step=step,
                                         device=self.device, autocast=self.precision.autocast,
                                         mask_labels=tuple(self.cfg.preprocess.mask_labels))
        except ImportError as e:  # viz not installed: training matters more than pictures
            self.note(f"preview skipped ({e})")

    # ------------------------------------------------------------------ loop
    def train_step(self, step: int) -> dict[str, float]:
        """One optimizer step; returns the loss terms (``loss``, ``l1``, ``kl``)."""
        from synthkit.networks.autoencoder import kl_divergence

        tc = self.cfg.train
        set_lr(self.optimizer, lr_at(step, tc))
        x, origins = sample_crops(self.images, self.boxes, self.cfg.crop, tc.batch_size, self.generator)
        x = x.to(self.device)
        mask = self._crop_masks(origins) if self.model.needs_mask else None
        with self.precision.autocast():
            if self.cfg.decoder_noise > 0:  # a decoder robust to the errors of sampled latents
                recon, mean, logvar = self._noisy_reconstruction(x, mask)
            else:
                recon, mean, logvar = self.model(x, generator=self.generator, mask=mask)
        l1 = (recon.float() - x).abs().mean()
        kl = kl_divergence(mean, logvar)
        loss = l1 + self.cfg.kl_weight * kl
        loss.backward()
        if tc.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.update(self.model)
        out = {"loss": float(loss.detach()), "l1": float(l1.detach()), "kl": float(kl.detach())}
        if not math.isfinite(out["loss"]):
            raise AutoencoderTrainingError(f"the loss became {out['loss']} at step {step + 1}; "
                                           "try a lower --lr or --precision fp32")
        return out

    def _crop_masks(self, origins: torch.Tensor) -> torch.Tensor:
        """The one-hot masks (B, K, c, c, c) of the crops at ``origins`` (from sample_crops)."""
        from synthkit.preprocess.case import one_hot

        c = self.cfg.crop
        crops = [self.dataset.labels[int(i), d:d + c, h:h + c, w:w + c] for i, d, h, w in origins.tolist()]
        return one_hot(torch.stack(crops), tuple(self.cfg.preprocess.mask_labels)).to(self.device)

    def _noisy_reconstruction(self, x: torch.Tensor,
                              mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """As ``model(x)``, the posterior sample plus ``decoder_noise`` (scaled-latent units) of
        Gaussian noise before decoding; both from the run's generator."""
        mean, logvar = self.model.encode(x)
        g = self.generator
        eps = noise_rule.randn(mean.shape, g, mean.device, mean.dtype)
        extra = noise_rule.randn(mean.shape, g, mean.device, mean.dtype)
        sigma = self.cfg.decoder_noise / float(self.cfg.scale_factor or 1.0)
        return self.model.decode(mean + torch.exp(0.5 * logvar) * eps + sigma * extra, mask), mean, logvar

    def run(self, stop_at: int | None = None) -> Path:
        """Train to ``cfg.train.steps`` (or stop after ``stop_at`` steps, checkpointing there, as
        if interrupted); at the end the scale factor is measured on more cases. Returns the folder."""
        tc = self.cfg.train
        end = tc.steps if stop_at is None else min(stop_at, tc.steps)
        task = None
        if self.progress is not None:
            task = self.progress.add_task("autoencoder", total=tc.steps, completed=self.start_step)
        voxels = tc.batch_size * self.cfg.crop**3
        self.model.train()
        step = self.start_step
        try:
            while step < end:
                t0 = time.perf_counter()
                losses = self.train_step(step)
                step += 1
                dt = time.perf_counter() - t0
                self.elapsed += dt
                if step % max(1, tc.log_every) == 0 or step == end:
                    self.log.write({"step": step, **losses, "lr": lr_at(step - 1, tc), "time": round(self.elapsed, 4),
                                    "s_per_step": round(dt, 4), "voxels_per_s": voxels / max(dt, 1e-9)})
                final = step == tc.steps
                if step % max(1, tc.checkpoint_every) == 0 or step == end:
                    self.save_checkpoint(step, SCALE_CASES_FINAL if final else SCALE_CASES_CHECKPOINT)
                if tc.preview_every and (step % tc.preview_every == 0 or final):
                    self._preview(step)
                if task is not None:
                    self.progress.update(task, completed=step, description=(
                        f"autoencoder L1 {losses['l1']:.4f} lr {lr_at(step - 1, tc):.1e} {dt:.1f} s/step"))
        finally:
            self.log.close()
        self.start_step = step
        return self.run_dir


def train_autoencoder(cohort: Any, run_dir: str | Path, cfg: AutoencoderRunConfig | None = None, *,
                      resume: bool = False, device: str = "cpu", progress: Any = None,
                      cache_dir: str | Path | None = None, on_note: Callable[[str], None] | None = None,
                      init: str | Path | None = None) -> Path:
    """Train an autoencoder on ``cohort`` into ``run_dir`` (see the module docstring); returns it.
    ``cfg``: default the ``small`` preset at 128^3."""
    if cfg is None:
        from synthkit.config import autoencoder_config

        cfg = AutoencoderRunConfig(autoencoder=autoencoder_config("small"), preset="small")
    trainer = AutoencoderTrainer(cohort, run_dir, cfg, resume=resume, device=device, progress=progress,
                                 cache_dir=cache_dir, on_note=on_note, init=init)
    return trainer.run()
