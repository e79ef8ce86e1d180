"""`synthkit train COHORT --out RUN`: train a Med-DDPM model (also under torchrun) or, with
``--model pix2pix|discogan``, one of the paper's GAN baselines on a cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthkit.cli._common import (
    INTENSITY_BOUNDS_HELP,
    RECIPE_HELP,
    DeviceOption,
    IntensityBoundsChoice,
    LatentNormChoice,
    LossChoice,
    ModelKindChoice,
    PrecisionChoice,
    PredictionChoice,
    PresetChoice,
    RecipeChoice,
    err_console,
    handle_errors,
    make_progress,
    value_of,
)


def build_config(*, config: Path | None, run_dir: Path, resume: bool, preset: str | None,
                 recipe: str | None = None, **flags):
    """The RunConfig for this run: ``--config FILE`` (or, with ``--resume``, the run's own
    config.json), else ``--recipe NAME``'s, else the defaults; then every flag that was given
    overrides it. ``model_type``
    (``--model``) picks Med-DDPM (``ddpm``) or a GAN baseline (``pix2pix``, ``discogan``).
    Choice flags arrive checked (Enums); a config file's values are checked when it is read."""
    import dataclasses

    from synthkit.config import RunConfig, model_config
    from synthkit.errors import UsageError
    from synthkit.recipes import get_recipe

    model_type = flags.get("model_type")
    if recipe is not None and config is not None:
        raise UsageError("--recipe and --config both give the starting settings; use one of them")
    if recipe is not None and model_type not in (None, "ddpm"):
        raise UsageError(f"recipes are Med-DDPM settings; --model {model_type} takes --preset")
    if config is not None:
        cfg = RunConfig.load(config)
    elif resume and (run_dir / "config.json").exists():
        cfg = RunConfig.load(run_dir / "config.json")
        if recipe is not None and cfg.recipe != recipe:
            raise UsageError(f"cannot resume with --recipe {recipe}: the run was started with "
                             f"{'recipe ' + cfg.recipe if cfg.recipe else 'no recipe'}", run_dir / "config.json")
    elif recipe is not None:
        cfg = get_recipe(recipe).run_config()
    else:
        cfg = RunConfig()
        preset = preset or "small"
    if model_type is not None:
        cfg = dataclasses.replace(cfg, model_type=model_type)
    if cfg.model_type in ("pix2pix", "discogan"):
        return _gan_config(cfg, preset, flags)
    model = cfg.model
    if preset is not None:
        # the preset is the size; how the mask enters and checkpointing stay as the config had them
        model = model_config(preset, model.image_channels, model.mask_classes, cond_factor=model.cond_factor,
                             gradient_checkpointing=model.gradient_checkpointing)
        cfg = dataclasses.replace(cfg, preset=preset)
    if flags.get("grad_checkpoint") is not None:
        model = dataclasses.replace(model, gradient_checkpointing=flags["grad_checkpoint"])
    if flags.get("cond_factor") is not None:
        model = dataclasses.replace(model, cond_factor=int(flags["cond_factor"]))
    if flags.get("label_weights"):
        flags["label_weights"] = tuple(float(w) for w in flags["label_weights"])
    if flags.get("cond_drop") is not None and not 0.0 <= flags["cond_drop"] < 1.0:
        raise UsageError("--cond-drop must be in [0, 1)")
    train_keys = {"steps": "steps", "batch_size": "batch_size", "lr": "lr", "lr_final": "lr_final",
                  "checkpoint_every": "checkpoint_every", "seed": "seed", "precision": "precision",
                  "grad_accum": "grad_accum", "ema_decay": "ema_decay", "preview_every": "preview_every",
                  "grad_clip": "grad_clip", "num_workers": "num_workers", "weight_decay": "weight_decay",
                  "label_weights": "label_weights", "cond_drop": "cond_drop"}
    train = dataclasses.replace(cfg.train, **{v: flags[k] for k, v in train_keys.items() if flags.get(k) is not None})
    diff_keys = ("prediction", "loss", "timesteps")
    diffusion = dataclasses.replace(cfg.diffusion, **{k: flags[k] for k in diff_keys if flags.get(k) is not None})
    cfg = dataclasses.replace(cfg, model=model, train=train, diffusion=diffusion)
    return _preprocess_flags(cfg, flags)


def _preprocess_flags(cfg, flags: dict):
    """``cfg`` with the preprocessing flags (--shape, --label-map, --brain-label, --mask-label) applied."""
    import dataclasses
    import json

    from synthkit.errors import UsageError

    pre = cfg.preprocess
    if flags.get("shape") is not None:
        pre = dataclasses.replace(pre, target_shape=tuple(int(s) for s in flags["shape"]))
    if flags.get("label_map") is not None:
        try:
            lm = json.loads(flags["label_map"])
            lm = {str(k): int(v) for k, v in lm.items()}
        except (ValueError, AttributeError, TypeError):
            raise UsageError('--label-map must be a JSON object like \'{"4": 3}\'') from None
        pre = dataclasses.replace(pre, label_map=lm)
    if flags.get("brain_label") is not None:
        pre = dataclasses.replace(pre, brain_label=flags["brain_label"])
    if flags.get("mask_labels") is not None:
        pre = dataclasses.replace(pre, mask_labels=tuple(flags["mask_labels"]))
    if flags.get("intensity_bounds") is not None:
        pre = dataclasses.replace(pre, intensity_bounds=flags["intensity_bounds"])
    return dataclasses.replace(cfg, preprocess=pre)


_DIFFUSION_ONLY = ("lr_final", "prediction", "loss", "timesteps", "grad_accum", "grad_checkpoint", "grad_clip",
                   "precision", "weight_decay", "cond_factor", "label_weights", "cond_drop")


def _gan_config(cfg, preset: str | None, flags: dict):
    """The GAN-baseline part of :func:`build_config`: ``--preset`` picks the GAN sizes,
    ``--lr`` sets ``gan.lr``; flags that only mean something for diffusion are refused."""
    import dataclasses

    from synthkit.config import gan_config
    from synthkit.errors import UsageError

    given = [k for k in _DIFFUSION_ONLY if flags.get(k) is not None]
    if given:
        raise UsageError(f"--{given[0].replace('_', '-')} applies to the diffusion model, not to {cfg.model_type}")
    gan = cfg.gan
    if preset is not None:
        gan = gan_config(preset, **{k: v for k, v in dataclasses.asdict(gan).items()
                                    if k not in ("base_channels", "depth", "disc_channels", "disc_layers")})
        cfg = dataclasses.replace(cfg, preset=preset)
    if flags.get("lr") is not None:
        gan = dataclasses.replace(gan, lr=flags["lr"])
    train_keys = ("steps", "batch_size", "checkpoint_every", "seed", "ema_decay", "preview_every", "num_workers")
    train = dataclasses.replace(cfg.train, **{k: flags[k] for k in train_keys if flags.get(k) is not None})
    return _preprocess_flags(dataclasses.replace(cfg, train=train, gan=gan), flags)


def _init_folder(init: str | None, cfg) -> Path | None:
    """``--init``: the run folder of a path or shipped model name (diffusion runs only)."""
    from synthkit.errors import UsageError
    from synthkit.pipeline import resolve_run

    if init is None:
        return None
    if cfg.model_type not in ("ddpm", "latent"):
        raise UsageError("--init starts a diffusion denoiser, not a GAN baseline")
    return resolve_run(init)


def _check_recipe_kind(recipe: str | None, autoencoder: Path | None, resume: bool, cohort: Path, out: Path) -> None:
    """A latent recipe needs ``--autoencoder`` (trained with the same recipe); a pixel one refuses it."""
    from synthkit.errors import UsageError
    from synthkit.recipes import get_recipe

    if recipe is None:
        return
    kind = get_recipe(recipe).kind
    if kind == "latent" and autoencoder is None and not resume:
        raise UsageError(f"recipe {recipe} is latent: first `synthkit autoencoder train {cohort} --recipe {recipe} "
                         f"--out AE`, then `synthkit train {cohort} --recipe {recipe} --autoencoder AE --out {out}`")
    if kind == "pixel" and autoencoder is not None:
        raise UsageError(f"recipe {recipe} trains in pixel space; drop --autoencoder (or use a latent recipe)")


def register(app: typer.Typer) -> None:
    @app.command("train")
    @handle_errors
    def train(
        cohort: Annotated[Path, typer.Argument(help="Cohort folder (nnU-Net raw, flat, BraTS or DICOM).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Run folder to write (config, weights, logs).")],
        recipe: Annotated[RecipeChoice | None, typer.Option("--recipe", help=RECIPE_HELP, show_default=False)] = None,
        model: Annotated[ModelKindChoice | None, typer.Option("--model", help="ddpm (Med-DDPM, default), or the GAN baselines pix2pix or discogan.", show_default=False)] = None,
        preset: Annotated[PresetChoice | None, typer.Option(help="Model size (default: small, or the recipe's).", show_default=False)] = None,
        shape: Annotated[tuple[int, int, int] | None, typer.Option(help="Network grid D H W (e.g. 128 128 128).")] = None,
        steps: Annotated[int | None, typer.Option(help="Optimizer steps in total.")] = None,
        batch_size: Annotated[int | None, typer.Option(help="Volumes per micro-batch per process.")] = None,
        lr: Annotated[float | None, typer.Option(help="Learning rate for the first half (paper: 1e-5; GANs: 2e-4).")] = None,
        lr_final: Annotated[float | None, typer.Option(help="Learning rate for the second half (paper: 1e-6).")] = None,
        checkpoint_every: Annotated[int | None, typer.Option(help="Write a resumable checkpoint every K steps.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
        seed: Annotated[int | None, typer.Option(help="Seed for initialisation, data order and noise.")] = None,
        device: DeviceOption = "auto",
        precision: Annotated[PrecisionChoice | None, typer.Option(help="Training precision (default fp32; fp16 on CUDA only).", show_default=False)] = None,
        config: Annotated[Path | None, typer.Option(help="RunConfig JSON file; flags override it.")] = None,
        prediction: Annotated[PredictionChoice | None, typer.Option(help="What the network predicts (default epsilon).", show_default=False)] = None,
        loss: Annotated[LossChoice | None, typer.Option(help="Loss (default l1, as the paper).", show_default=False)] = None,
        timesteps: Annotated[int | None, typer.Option(help="Diffusion steps T (paper: 250).")] = None,
        grad_accum: Annotated[int | None, typer.Option(help="Micro-batches per optimizer step.")] = None,
        grad_clip: Annotated[float | None, typer.Option(help="Clip the gradient norm to this value (0: off).")] = None,
        ema_decay: Annotated[float | None, typer.Option(help="EMA decay of the sampling weights.")] = None,
        preview_every: Annotated[int | None, typer.Option(help="Write a preview PNG every K steps (0: never).")] = None,
        grad_checkpoint: Annotated[bool | None, typer.Option("--grad-checkpoint/--no-grad-checkpoint",
                                   help="Activation checkpointing: less memory, ~30% slower.")] = None,
        label_map: Annotated[str | None, typer.Option(help='Remap raw labels first, JSON: \'{"4": 3}\' (BraTS).')] = None,
        brain_label: Annotated[int | None, typer.Option(help="Add this label for unlabelled brain voxels (BraTS: 4).")] = None,
        intensity_bounds: Annotated[IntensityBoundsChoice | None, typer.Option(help=INTENSITY_BOUNDS_HELP, show_default=False)] = None,
        mask_labels: Annotated[list[int] | None, typer.Option("--mask-label", help="Label values to condition on, in order (repeat). Default: from the cohort.")] = None,
        cache_dir: Annotated[Path | None, typer.Option(help="Preprocessing cache (default RUN/cache).")] = None,
        autoencoder: Annotated[Path | None, typer.Option("--autoencoder", help="Train latent Med-DDPM on the latents of this "
                               "autoencoder run ('synthkit autoencoder train'); copied into RUN/autoencoder.")] = None,
        latent_norm: Annotated[LatentNormChoice | None, typer.Option("--latent-norm", help="Latent runs: channel (default for a new run: "
                               "standardise each latent channel with the training latents' mean/std) or global (the "
                               "autoencoder's scale factor only).", show_default=False)] = None,
        init: Annotated[str | None, typer.Option("--init", help="Start from this run's weights (a run folder or shipped "
                        "model name, e.g. demo-latent): same preset; a finer --cond-factor is expanded so the "
                        "network starts as the init run's.", show_default=False)] = None,
        cond_factor: Annotated[int | None, typer.Option(help="Latent runs: the mask reaches the latent grid pooled to this "
                               "many times its resolution, then space-to-depth (1: pooled, as before; 4: the full mask).")] = None,
        label_weights: Annotated[list[float] | None, typer.Option("--label-weight", help="Loss weight per mask label, in "
                                 "--mask-label order (repeat; default 1 each).", show_default=False)] = None,
        cond_drop: Annotated[float | None, typer.Option(help="Fraction of steps with the mask zeroed, for "
                             "'sample --guidance' (classifier-free guidance; default 0).")] = None,
        num_workers: Annotated[int | None, typer.Option(help="Data loader worker processes.")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Train a mask-conditioned diffusion model (Med-DDPM), or a GAN baseline, on COHORT into the run folder --out."""
        from synthkit.errors import UsageError
        from synthkit.runtime.ddp import barrier, init_distributed
        from synthkit.training.trainer import Trainer

        cfg = build_config(config=config, run_dir=out, resume=resume, preset=value_of(preset),
                           recipe=value_of(recipe), shape=shape,
                           steps=steps, batch_size=batch_size, lr=lr, lr_final=lr_final,
                           checkpoint_every=checkpoint_every, seed=seed, precision=value_of(precision),
                           prediction=value_of(prediction), loss=value_of(loss), timesteps=timesteps,
                           grad_accum=grad_accum, grad_clip=grad_clip, ema_decay=ema_decay,
                           preview_every=preview_every, grad_checkpoint=grad_checkpoint, label_map=label_map,
                           brain_label=brain_label, mask_labels=mask_labels,
                           intensity_bounds=value_of(intensity_bounds), num_workers=num_workers,
                           cond_factor=cond_factor, label_weights=label_weights, cond_drop=cond_drop,
                           model_type=value_of(model))
        trainer_cls = Trainer
        _check_recipe_kind(value_of(recipe), autoencoder, resume, cohort, out)
        if autoencoder is not None or cfg.model_type == "latent":
            from synthkit.training.autoencoder_latent import LatentTrainer, prepare_latent_run

            cfg = prepare_latent_run(out, cfg, autoencoder, shape, value_of(latent_norm))
            trainer_cls = LatentTrainer
        elif latent_norm is not None:
            raise UsageError("--latent-norm is for latent runs (with --autoencoder AE)")
        elif cfg.model_type != "ddpm":
            from synthkit.training.gan import GanTrainer

            trainer_cls = GanTrainer  # same interface; single process
        dist = init_distributed(device)

        def note(msg: str) -> None:
            if dist.is_main and not quiet:
                err_console.print(f"synthkit: {msg}", markup=False)

        with make_progress(quiet or not dist.is_main) as progress:
            trainer = trainer_cls(cohort, out, cfg, resume=resume, device=device, progress=progress,
                              cache_dir=cache_dir, on_note=note, dist=dist, init=_init_folder(init, cfg))
            try:
                trainer.run()
                barrier(dist)  # every rank done before the group goes: gloo aborts a rank whose peer left first
            finally:
                trainer.close()
        if dist.is_main and not quiet:
            err_console.print(f"synthkit: trained {trainer.start_step} steps; weights in {out / 'model.safetensors'}",
                              markup=False)
