"""Training of the GAN baselines (Pix2Pix, DiscoGAN; networks in synthkit.networks.gan; sampling in
synthkit.pipeline.gan).

The run folder is the same as for Med-DDPM (``config.json`` with ``model_type``,
``model.safetensors`` = EMA weights of the mask -> image generator, ``checkpoint/``,
``log.jsonl``, ``intensity.json``, ``train_cohort.json``, ``previews/``), written with the same
utilities (synthkit.training: checkpoint, EMA, RNG capture, run log, batch order). One
optimizer step on a batch ``a`` = one-hot mask ``(B, K, D, H, W)``, ``b`` = image
``(B, C, D, H, W)`` in [-1, 1] (Isola et al.'s order: discriminator first, then generator)::

    Pix2Pix:  fake = G(a)
              L_D = 1/2 [adv(D(a, b), 1) + adv(D(a, fake), 0)]
              L_G = adv(D(a, fake), 1) + lambda_l1 |fake - b|
    DiscoGAN: a' = 2a - 1;  fake_b = G_AB(a);  fake_a = G_BA(b)
              L_D = 1/2 [adv(D_B(b), 1) + adv(D_B(fake_b), 0)] + 1/2 [adv(D_A(a'), 1) + adv(D_A(fake_a), 0)]
              L_G = adv(D_B(fake_b), 1) + adv(D_A(fake_a), 1)
                    + lambda_recon (|G_BA(fake_b) - a'| + |G_AB((fake_a + 1) / 2) - b|)
                    + lambda_l1 (|fake_b - b| + |fake_a - a'|)

``adv`` is the least-squares loss (``gan.adv_loss="lsgan"``, mean squared error, as the
Med-DDPM paper trained its baselines) or binary cross-entropy on logits (``"bce"``).
Generators and discriminators share ONE Adam optimizer with two parameter groups: a parameter
whose gradient is ``None`` is skipped by Adam, so each half-step updates only its own networks
while the checkpoint keeps the single-optimizer format of synthkit.runtime.checkpoint.
Dropout (the generator's noise) is drawn from the run's ``torch.Generator``; together with the
seeded initialisation and the step-determined batch order a resumed run repeats bit for bit on
CPU. GAN runs are single-process (no DDP) and fp32; ``train.lr``/``lr_final``/``grad_clip``/
``precision`` are the diffusion model's and not used (``gan.lr`` is).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from synthkit import noise as noise_rule
from synthkit.config import GanConfig, RunConfig
from synthkit.errors import UsageError
from synthkit.runtime import checkpoint as ckpt
from synthkit.training.ema import EMA
from synthkit.training.lr import set_lr
from synthkit.training.rng import capture_rng, restore_rng
from synthkit.training.rng import generator_seed as _gen_seed
from synthkit.training.trainer import Trainer, TrainingError, run_trainer

GAN_TYPES = ("pix2pix", "discogan")


def adversarial_loss(pred: torch.Tensor, real: bool, kind: str = "lsgan") -> torch.Tensor:
    """Discriminator scores (any shape) against the all-real / all-fake target (scalar)."""
    target = torch.ones_like(pred) if real else torch.zeros_like(pred)
    if kind == "lsgan":
        return F.mse_loss(pred, target)
    if kind == "bce":
        return F.binary_cross_entropy_with_logits(pred, target)
    raise ValueError(f"adv_loss must be 'lsgan' or 'bce', not {kind!r}")


def gan_lr_at(step: int, gan: GanConfig, total_steps: int) -> float:
    """Learning rate of 0-based step ``step``: constant, or (``lr_decay="linear"``, Isola et al.)
    constant for the first half, then linearly down towards 0."""
    if gan.lr_decay == "constant":
        return gan.lr
    half = total_steps // 2
    if step < half:
        return gan.lr
    return gan.lr * (1.0 - (step - half) / max(1, total_steps - half))


def check_gan_config(cfg: RunConfig) -> None:
    """UsageError for settings the GAN trainer cannot honour."""
    from synthkit.networks.gan import check_gan_shape

    g, tc = cfg.gan, cfg.train
    if cfg.model_type not in GAN_TYPES:
        raise UsageError(f"not a GAN model type: {cfg.model_type!r} (choose {' or '.join(GAN_TYPES)})")
    if g.norm not in ("instance", "batch") or g.adv_loss not in ("lsgan", "bce") \
            or g.lr_decay not in ("constant", "linear"):
        raise UsageError("gan.norm must be instance|batch, gan.adv_loss lsgan|bce, gan.lr_decay constant|linear")
    if g.depth < 2 or g.disc_layers < 1 or g.base_channels < 1 or g.disc_channels < 1 or not 0 <= g.dropout < 1:
        raise UsageError("gan: depth >= 2, disc_layers >= 1, channels >= 1 and 0 <= dropout < 1 are required")
    if tc.batch_size < 1 or tc.steps < 1:
        raise UsageError("--steps and --batch-size must be at least 1")
    if tc.grad_accum != 1:
        raise UsageError("--grad-accum applies to the diffusion model; GAN baselines take one batch per step")
    if tc.precision != "fp32":
        raise UsageError("GAN baselines train in fp32 only (--precision fp32)")
    why = check_gan_shape(g, cfg.preprocess.target_shape)
    if why:
        raise UsageError(f"--shape: {why}")


def _floats(**terms: torch.Tensor) -> dict[str, float]:
    return {k: float(v.detach()) for k, v in terms.items()}


class GanTrainer(Trainer):
    """Trains a Pix2Pix or DiscoGAN baseline; same constructor and :meth:`run` as :class:`Trainer`.

    Attributes after setup: ``nets`` (``nn.ModuleDict``, see synthkit.networks.gan.build_gan),
    ``ema`` (of ``nets["g"]``), ``optimizer``, ``generator`` (dropout noise), ``dataset``.
    """

    # ------------------------------------------------------------------ setup
    weights_label = "GAN weights"

    def _setup(self, cohort: Any, cfg: RunConfig, resume: bool, cache_dir: str | Path | None) -> None:
        from synthkit.networks.gan import build_gan

        if self.dist.distributed:
            raise UsageError("GAN baselines train in a single process; run them without torchrun")
        cohort, latest = self._open_run(cohort, cfg, resume)
        cfg = self.cfg
        tc = cfg.train
        self._prepare_data(cohort, cache_dir)

        nets = self._seeded_init(lambda: build_gan(cfg.model_type, cfg.gan, cfg.model.image_channels,
                                                   cfg.model.mask_classes))
        self.nets = nets.to(self.device)
        self.model = self.nets  # what the base class calls "model": every trained weight
        self.gens = [n for k, n in self.nets.items() if k.startswith("g")]
        self.discs = [n for k, n in self.nets.items() if k.startswith("d")]
        self.ema = EMA(self.nets["g"], tc.ema_decay)
        groups = [{"params": [p for n in self.gens for p in n.parameters()]},
                  {"params": [p for n in self.discs for p in n.parameters()]}]
        self.optimizer = torch.optim.Adam(groups, lr=self._lr(0), betas=tuple(cfg.gan.betas))
        self.scaler = None
        self.generator = noise_rule.cpu_generator(_gen_seed(tc.seed, 0))  # same noise on any device
        self._start_or_resume(resume, latest)

    def _fit_config(self, cfg: RunConfig, cohort: Any) -> RunConfig:
        cfg = super()._fit_config(cfg, cohort)
        check_gan_config(cfg)
        return cfg

    def _resume_mismatch(self, old: RunConfig, new: RunConfig) -> str:
        why = super()._resume_mismatch(old, new)
        if old.model_type != new.model_type:
            return f"the run is a {old.model_type} model, not {new.model_type}"
        if dataclasses.replace(old.gan, lr=new.gan.lr) != new.gan:
            return why or "the GAN settings differ from the run's config.json"
        return why

    def _check_dataset(self, cohort: Any) -> None:
        if self.dataset.images is None:
            raise UsageError("the cohort has masks but no images to learn from", cohort.root)

    def _lr(self, step: int) -> float:
        return gan_lr_at(step, self.cfg.gan, self.cfg.train.steps)

    def _restore_rng(self, state: ckpt.TrainingState) -> None:
        if 0 in state.rng:
            restore_rng(state.rng[0], {"train": self.generator})

    def save_checkpoint(self, step: int) -> None:
        info = {"elapsed": self.elapsed, "world_size": 1, "model_type": self.cfg.model_type,
                "config": dataclasses.asdict(self.cfg)}
        state = ckpt.TrainingState(
            step=step, model=self.nets.state_dict(), ema=self.ema.state_dict(), ema_updates=self.ema.num_updates,
            optimizer=self.optimizer.state_dict(), rng={0: capture_rng({"train": self.generator})}, info=info)
        self._write_checkpoint(step, state, model_type=self.cfg.model_type)

    @torch.no_grad()
    def _preview(self, step: int) -> None:
        try:
            from synthkit.viz import montage
        except ImportError as e:
            self.note(f"preview skipped ({e})")
            return
        item = self.dataset[0]
        g = noise_rule.cpu_generator(self.cfg.train.seed)
        noise = g if self.cfg.gan.sample_dropout else None
        synth = self.ema.model(item["cond"][None].to(self.device), generator=noise)[0].float().cpu().numpy()
        real, labels = item["image"].numpy(), item["labels"].numpy()
        vols, titles = [], []
        for c in range(min(int(real.shape[0]), 4)):
            vols += [real[c], synth[c]]
            titles += [f"real ch{c}", f"{self.cfg.model_type} ch{c} (step {step})"]
        montage(vols, [labels] * len(vols), titles, self.run_dir / "previews" / f"step_{step:08d}.png",
                window=(-1.0, 1.0))

    # ------------------------------------------------------------------ one step
    def _requires_grad(self, nets: Sequence[torch.nn.Module], flag: bool) -> None:
        for n in nets:
            for p in n.parameters():
                p.requires_grad_(flag)

    def gan_losses(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Discriminator update, then the generator loss: returns (loss_d detached, loss_g, parts)."""
        g, kind, n = self.cfg.gan, self.cfg.gan.adv_loss, self.nets
        noise = self.generator
        if self.cfg.model_type == "pix2pix":
            fake = n["g"](a, generator=noise)
            loss_d = 0.5 * (adversarial_loss(n["d"](torch.cat([a, b], 1)), True, kind)
                            + adversarial_loss(n["d"](torch.cat([a, fake.detach()], 1)), False, kind))
            self._step_d(loss_d)
            adv = adversarial_loss(n["d"](torch.cat([a, fake], 1)), True, kind)
            l1 = (fake - b).abs().mean()
            return loss_d.detach(), adv + g.lambda_l1 * l1, _floats(adv_g=adv, l1=l1)
        a_pm = 2.0 * a - 1.0
        fake_b = n["g"](a, generator=noise)
        fake_a = n["g_ba"](b, generator=noise)
        loss_d = 0.5 * (adversarial_loss(n["d"](b), True, kind) + adversarial_loss(n["d"](fake_b.detach()), False, kind)) \
            + 0.5 * (adversarial_loss(n["d_a"](a_pm), True, kind)
                     + adversarial_loss(n["d_a"](fake_a.detach()), False, kind))
        self._step_d(loss_d)
        adv = adversarial_loss(n["d"](fake_b), True, kind) + adversarial_loss(n["d_a"](fake_a), True, kind)
        rec_a = n["g_ba"](fake_b, generator=noise)
        rec_b = n["g"]((fake_a + 1.0) / 2.0, generator=noise)
        recon = (rec_a - a_pm).abs().mean() + (rec_b - b).abs().mean()
        l1 = (fake_b - b).abs().mean() + (fake_a - a_pm).abs().mean()
        loss_g = adv + g.lambda_recon * recon + g.lambda_l1 * l1
        return loss_d.detach(), loss_g, _floats(adv_g=adv, l1=l1, recon=recon)

    def _step_d(self, loss_d: torch.Tensor) -> None:
        """Discriminator half-step; afterwards the discriminators are frozen for the generator's."""
        self._requires_grad(self.discs, True)
        self.optimizer.zero_grad(set_to_none=True)
        loss_d.backward()  # fakes are detached: generator grads stay None, Adam skips them
        self.optimizer.step()
        self._requires_grad(self.discs, False)

    def train_step(self, step: int, batches) -> dict[str, float]:  # type: ignore[override]
        """One discriminator and one generator update (+ EMA); returns the loss terms as floats."""
        set_lr(self.optimizer, self._lr(step))
        batch = next(batches)
        b = batch["image"].to(self.device)
        a = batch["cond"].to(self.device)
        loss_d, loss_g, parts = self.gan_losses(a, b)
        self.optimizer.zero_grad(set_to_none=True)
        loss_g.backward()  # discriminators frozen: their grads stay None, Adam skips them
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self._requires_grad(self.discs, True)
        self.ema.update(self.nets["g"])
        return {"loss_g": float(loss_g.detach()), "loss_d": float(loss_d), **parts}

    # ------------------------------------------------------------------ loop (Trainer.run)
    def _step_losses(self, step: int, batches) -> dict[str, float]:
        losses = self.train_step(step, batches)
        bad = [k for k, v in losses.items() if not math.isfinite(v)]
        if bad:
            raise TrainingError(f"the GAN loss ({', '.join(bad)}) became non-finite at step {step + 1}; "
                                "try a lower --lr")
        return losses

    def _task_name(self) -> str:
        return f"train {self.cfg.model_type}"

    def _describe(self, step: int, losses: dict[str, float], images_per_s: float) -> str:
        return f"train {self.cfg.model_type} G {losses['loss_g']:.3f} D {losses['loss_d']:.3f}"


def train_gan(cohort: Any, run_dir: str | Path, cfg: RunConfig, *, resume: bool = False, device: str = "cpu",
              progress: Any = True, cache_dir: str | Path | None = None,
              on_note: Callable[[str], None] | None = None) -> Path:
    """Train the GAN baseline ``cfg.model_type`` (``"pix2pix"`` or ``"discogan"``) on ``cohort``
    into ``run_dir``; returns ``run_dir``. Arguments as :func:`synthkit.training.train`."""
    return run_trainer(GanTrainer, cohort, run_dir, cfg, resume=resume, device=device, progress=progress,
                       cache_dir=cache_dir, on_note=on_note)
