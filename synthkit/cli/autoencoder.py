"""`synthkit autoencoder train COHORT --out AE` and `synthkit autoencoder eval AE COHORT`: the KL
autoencoder of latent Med-DDPM. The work is done by synthkit.training.autoencoder*."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthkit.cli._common import (
    INTENSITY_BOUNDS_HELP,
    RECIPE_HELP,
    AutoencoderPrecisionChoice,
    AutoencoderPresetChoice,
    DeviceOption,
    IntensityBoundsChoice,
    RecipeChoice,
    command_group,
    console,
    err_console,
    handle_errors,
    make_progress,
    value_of,
)

_AE_RECIPE_HELP = ("The autoencoder of a latent recipe (demo-latent, paper-head-latent, brats-latent); flags "
                   "override it. " + RECIPE_HELP)


def build_ae_config(*, out: Path, resume: bool, preset: str | None, recipe: str | None = None, **flags):
    """The AutoencoderRunConfig: with ``--resume`` the run's config.json, else ``--recipe NAME``'s
    autoencoder, else the defaults (preset ``small``, 128^3); then every flag that was given
    overrides it."""
    import dataclasses

    from synthkit.config import AutoencoderRunConfig, autoencoder_config
    from synthkit.errors import UsageError
    from synthkit.recipes import get_recipe

    init = flags.pop("init", None)
    if recipe is not None and init is not None:
        raise UsageError("--init takes the architecture of that autoencoder; drop --recipe")
    if resume and (out / "config.json").exists():
        cfg = AutoencoderRunConfig.load(out / "config.json")
        if recipe is not None and cfg.recipe != recipe:
            raise UsageError(f"cannot resume with --recipe {recipe}: the run was started with "
                             f"{'recipe ' + cfg.recipe if cfg.recipe else 'no recipe'}", out / "config.json")
    elif recipe is not None:
        cfg = get_recipe(recipe).autoencoder_config()
    elif init is not None:  # the architecture, grid and data settings of the init autoencoder
        if preset is not None or flags.get("latent_channels") is not None:
            raise UsageError("--init takes the architecture of that autoencoder; drop --preset / --latent-channels")
        if not (Path(init) / "config.json").is_file():
            raise UsageError("--init: not an autoencoder run folder (config.json is missing)", init)
        cfg = AutoencoderRunConfig.load(Path(init) / "config.json")
        cfg = dataclasses.replace(cfg, train=AutoencoderRunConfig().train, init_sha256=None)
    else:
        cfg = AutoencoderRunConfig()
        preset = preset or "small"
    if preset is not None:
        cfg = dataclasses.replace(cfg, autoencoder=autoencoder_config(preset, cfg.autoencoder.image_channels),
                                  preset=preset)
    if flags.get("latent_channels") is not None:
        if int(flags["latent_channels"]) < 1:
            raise UsageError("--latent-channels must be at least 1")
        cfg = dataclasses.replace(cfg, autoencoder=dataclasses.replace(
            cfg.autoencoder, latent_channels=int(flags["latent_channels"])))
    train_keys = ("steps", "batch_size", "lr", "lr_final", "seed", "precision", "checkpoint_every",
                  "preview_every", "ema_decay")
    train = dataclasses.replace(cfg.train, **{k: flags[k] for k in train_keys if flags.get(k) is not None})
    if train.precision not in ("fp32", "bf16"):
        raise UsageError(f"--precision must be fp32 or bf16, not {train.precision!r}")
    if flags.get("mask_decoder") and not cfg.autoencoder.mask_channels:
        if resume and (out / "config.json").exists():
            raise UsageError("cannot resume with --mask-decoder: the run's decoder does not read the mask",
                             out / "config.json")
        cfg = dataclasses.replace(cfg, autoencoder=dataclasses.replace(cfg.autoencoder, mask_channels=1))  # K from the cohort
    top = {k: flags[k] for k in ("crop", "kl_weight", "freeze_encoder", "decoder_noise") if flags.get(k) is not None}
    pre = cfg.preprocess
    if flags.get("shape") is not None:
        pre = dataclasses.replace(pre, target_shape=tuple(int(s) for s in flags["shape"]))
    if flags.get("intensity_bounds") is not None:
        if resume and flags["intensity_bounds"] != pre.intensity_bounds:
            raise UsageError(f"cannot resume with --intensity-bounds {flags['intensity_bounds']}: the run normalises "
                             f"with {pre.intensity_bounds}", out / "config.json")
        pre = dataclasses.replace(pre, intensity_bounds=flags["intensity_bounds"])
    return dataclasses.replace(cfg, train=train, preprocess=pre, **top)


def _set_threads(threads: int | None) -> None:
    """``--threads``: torch's CPU thread count (None: torch's choice)."""
    import torch

    from synthkit.errors import UsageError

    if threads is not None:
        if threads < 1:
            raise UsageError("--threads must be at least 1")
        torch.set_num_threads(threads)


def _print_eval(report: dict) -> None:
    from rich.table import Table

    has_clean = "psnr_ceiling" in report["mean"]
    t = Table(title=f"autoencoder reconstruction inside the head ({report['shape']})")
    t.add_column("case")
    t.add_column("PSNR dB", justify="right")
    t.add_column("SSIM", justify="right")
    if has_clean:
        t.add_column("PSNR vs clean", justify="right")
        t.add_column("ceiling dB", justify="right")
    rows = [*report["cases"], {"case_id": "mean", **report["mean"]}]
    for r in rows:
        cells = [r["case_id"], f"{r['psnr']:.2f}", f"{r['ssim']:.4f}"]
        if has_clean:
            cells += [f"{r['psnr_clean']:.2f}", f"{r['psnr_ceiling']:.2f}"]
        t.add_row(*cells)
    console.print(t)


def register(app: typer.Typer) -> None:
    sub = command_group(app, "autoencoder",
                        "The autoencoder of latent Med-DDPM: [bold]train[/] it on a cohort, [bold]eval[/] its reconstructions.")

    @sub.command("train")
    @handle_errors
    def train(
        cohort: Annotated[Path, typer.Argument(help="Cohort folder (nnU-Net raw, flat, BraTS or DICOM).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Autoencoder run folder to write.")],
        recipe: Annotated[RecipeChoice | None, typer.Option("--recipe", help=_AE_RECIPE_HELP, show_default=False)] = None,
        preset: Annotated[AutoencoderPresetChoice | None, typer.Option(help="Size (default: small, or the recipe's).", show_default=False)] = None,
        shape: Annotated[tuple[int, int, int] | None, typer.Option(help="Grid D H W the cohort is preprocessed to (default 128 128 128).")] = None,
        crop: Annotated[int | None, typer.Option(help="Edge of the random training crops (default 64).")] = None,
        intensity_bounds: Annotated[IntensityBoundsChoice | None, typer.Option(help=INTENSITY_BOUNDS_HELP, show_default=False)] = None,
        steps: Annotated[int | None, typer.Option(help="Optimizer steps in total.")] = None,
        batch_size: Annotated[int | None, typer.Option(help="Crops per step.")] = None,
        lr: Annotated[float | None, typer.Option(help="Adam learning rate (default 1e-3).")] = None,
        lr_final: Annotated[float | None, typer.Option(help="Learning rate of the last quarter (default 2e-4).")] = None,
        kl_weight: Annotated[float | None, typer.Option(help="Weight of the KL term (default 1e-6).")] = None,
        latent_channels: Annotated[int | None, typer.Option(help="Channels of the latent (default: the preset's, 4).")] = None,
        ema_decay: Annotated[float | None, typer.Option(help="EMA decay of the saved weights.")] = None,
        seed: Annotated[int | None, typer.Option(help="Seed for initialisation, crops and posterior noise.")] = None,
        resume: Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its last checkpoint.")] = False,
        precision: Annotated[AutoencoderPrecisionChoice | None, typer.Option(help="Training precision (default fp32; bf16 is fast only with native bf16).", show_default=False)] = None,
        checkpoint_every: Annotated[int | None, typer.Option(help="Write a resumable checkpoint every K steps.")] = None,
        preview_every: Annotated[int | None, typer.Option(help="Write a preview PNG every K steps (0: never).")] = None,
        threads: Annotated[int | None, typer.Option(help="CPU threads for torch (default: torch's choice).")] = None,
        device: DeviceOption = "auto",
        cache_dir: Annotated[Path | None, typer.Option(help="Preprocessing cache (default AE/cache).")] = None,
        init: Annotated[Path | None, typer.Option("--init", help="Start from this autoencoder run's weights (and architecture).", show_default=False)] = None,
        freeze_encoder: Annotated[bool, typer.Option("--freeze-encoder", help="With --init: train the decoder only; latents (and a denoiser trained on them) stay valid.")] = False,
        decoder_noise: Annotated[float | None, typer.Option("--decoder-noise", help="With --freeze-encoder: Gaussian noise of this std (scaled-latent units) on the decoder's input, so it tolerates the errors of sampled latents (default 0).", show_default=False)] = None,
        mask_decoder: Annotated[bool, typer.Option("--mask-decoder", help="The decoder also reads the one-hot mask at every level, so labels are drawn at full resolution (with --init: grown from that decoder, starting as the same function).")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Train the KL autoencoder (4x per axis) on random crops of COHORT into --out."""

        from synthkit.training.autoencoder import AutoencoderTrainer

        _set_threads(threads)
        cfg = build_ae_config(out=out, resume=resume, preset=value_of(preset), recipe=value_of(recipe), shape=shape, crop=crop, steps=steps,
                              intensity_bounds=value_of(intensity_bounds),
                              batch_size=batch_size, lr=lr, lr_final=lr_final, kl_weight=kl_weight,
                              latent_channels=latent_channels, ema_decay=ema_decay, seed=seed, precision=value_of(precision),
                              checkpoint_every=checkpoint_every, preview_every=preview_every, init=init,
                              freeze_encoder=freeze_encoder or None, decoder_noise=decoder_noise,
                              mask_decoder=mask_decoder)

        def note(msg: str) -> None:
            if not quiet:
                err_console.print(f"synthkit: {msg}", markup=False)

        with make_progress(quiet) as progress:
            trainer = AutoencoderTrainer(cohort, out, cfg, resume=resume, device=device, progress=progress,
                                         cache_dir=cache_dir, on_note=note, init=init)
            trainer.run()
        if not quiet:
            err_console.print(f"synthkit: trained {trainer.start_step} steps; weights in {out / 'model.safetensors'} "
                              f"(latent scale factor {trainer.cfg.scale_factor:.4g})", markup=False)

    @sub.command("eval")
    @handle_errors
    def evaluate(
        ae: Annotated[Path, typer.Argument(help="Autoencoder run folder (from 'synthkit autoencoder train'), or a latent run / shipped latent model (e.g. demo-latent): its autoencoder.")],
        cohort: Annotated[Path, typer.Argument(help="Cohort to reconstruct (held-out cases).")],
        json_path: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON here.")] = None,
        clean: Annotated[Path | None, typer.Option(help="Noise-free copy of COHORT ('synthkit cohort demo --clean-copy'): "
                                                        "also report the noise ceiling.")] = None,
        precision: Annotated[AutoencoderPrecisionChoice, typer.Option(help="Precision of the autoencoder calls.")] = AutoencoderPrecisionChoice.FP32,
        threads: Annotated[int | None, typer.Option(help="CPU threads for torch.")] = None,
        device: DeviceOption = "auto",
        cache_dir: Annotated[Path | None, typer.Option(help="Preprocessing cache (default: a temporary folder).")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no table.")] = False,
    ) -> None:
        """PSNR and SSIM inside the head of every case of COHORT reconstructed by the autoencoder AE."""

        from synthkit.errors import UsageError
        from synthkit.io.atomic import write_json
        from synthkit.training.autoencoder_eval import evaluate_autoencoder

        _set_threads(threads)
        if not ae.exists() and len(ae.parts) == 1:  # a shipped latent model by name (demo-latent)
            from synthkit.errors import CheckpointError
            from synthkit.pipeline import resolve_run

            try:
                ae = resolve_run(ae)
            except CheckpointError:
                raise UsageError("no such autoencoder run folder, latent run or shipped model name", ae) from None
        with make_progress(quiet) as progress:
            report = evaluate_autoencoder(ae, cohort, clean=clean, device=device, precision=value_of(precision),
                                          cache_dir=cache_dir, progress=progress)
        if json_path is not None:
            write_json(json_path, report)
        if not quiet:
            _print_eval(report)
