"""`synthkit sample MASKS --model RUN --out OUT`: generate synthetic volumes for masks (also under
torchrun). The older `synthkit sample RUN MASKS --out OUT` still works, with a deprecation line."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthkit.cli._common import (
    SAMPLING_PRECISION_HELP,
    DeviceOption,
    LabelSpaceChoice,
    SamplerChoice,
    SamplingPrecisionChoice,
    deprecated,
    err_console,
    handle_errors,
    make_progress,
    steps_help,
    value_of,
)


def model_and_masks(first: str, second: Path | None, model: str | None) -> tuple[str, Path]:
    """(RUN, MASKS) from ``MASKS --model RUN`` or the deprecated ``RUN MASKS``."""
    from synthkit.errors import UsageError

    if model is not None:
        if second is not None:
            raise UsageError("give the masks once: `synthkit sample MASKS --model RUN` (no second argument)")
        return model, Path(first)
    if second is None:
        raise UsageError("which model? `synthkit sample MASKS --model RUN` (a run folder or a shipped model name, "
                         "e.g. demo-latent)")
    deprecated("`synthkit sample RUN MASKS`", "`synthkit sample MASKS --model RUN`")
    return first, second


def register(app: typer.Typer) -> None:
    @app.command("sample")
    @handle_errors
    def sample(
        masks_arg: Annotated[str, typer.Argument(metavar="MASKS", help="A folder of mask NIfTIs, or a cohort (its masks are used).", show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output cohort folder (nnU-Net raw layout).")],
        old_masks: Annotated[Path | None, typer.Argument(hidden=True, help="Deprecated form `sample RUN MASKS`: the masks after the run.", show_default=False)] = None,
        model: Annotated[str | None, typer.Option("--model", help="Run folder from `synthkit train` (or a shipped model name, e.g. demo-latent).", show_default=False)] = None,
        sampler: Annotated[SamplerChoice | None, typer.Option(help="ddpm (all T steps, as in the paper, default), ddim or dpmpp (DPM-Solver++). GAN runs: one generator pass, no sampler.", show_default=False)] = None,
        steps: Annotated[int | None, typer.Option(help=steps_help())] = None,
        eta: Annotated[float, typer.Option(help="DDIM stochasticity (0: deterministic given the seed).")] = 0.0,
        guidance: Annotated[float, typer.Option(help="Classifier-free guidance weight on the mask (1: none; "
                            ">1 follows the mask more strongly, one extra network pass per step). For runs trained "
                            "with --cond-drop.")] = 1.0,
        per_mask: Annotated[int, typer.Option(help="Volumes to generate per mask.")] = 1,
        seed: Annotated[int, typer.Option(help="Base seed; each volume's seed derives from it, the case id and k.")] = 0,
        batch_size: Annotated[int | None, typer.Option(help="Volumes per network call (default: 1 on cpu, 4 on cuda). "
                              "Each volume keeps its own seed: identical at batch size 1, within 1e-4 of the "
                              "intensity range at other batch sizes.")] = None,
        background: Annotated[bool | None, typer.Option("--background/--no-background",
                              help="Hold the image at background outside the head. Default: on when the mask has a head/brain label.")] = None,
        label_space: Annotated[LabelSpaceChoice, typer.Option(help="How mask values are read. auto: by the cohort's label names (dataset.json, BraTS) when they are the run's, else as raw; raw: labelled like the training files (the run's label map applied); network: already in the model's label values. The run's brain label is added from the first image channel when a case has images.")] = LabelSpaceChoice.AUTO,
        device: DeviceOption = "auto",
        precision: Annotated[SamplingPrecisionChoice, typer.Option(help=SAMPLING_PRECISION_HELP)] = SamplingPrecisionChoice.FP32,
        strict: Annotated[bool, typer.Option("--strict", help="Stop at the first unusable mask.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Generate synthetic images for every mask in MASKS, each on its mask's own grid."""
        from synthkit.cli._progress import volume_progress
        from synthkit.errors import UsageError
        from synthkit.jobs.sample import sample_run
        from synthkit.runtime.ddp import env_is_main

        run, masks = model_and_masks(masks_arg, old_masks, model)
        if batch_size is not None and batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if guidance < 0:
            raise UsageError("--guidance must be at least 0")
        shown = not quiet and env_is_main()  # under torchrun rank 0 speaks for all

        def note(msg: str) -> None:
            if not quiet:
                err_console.print(f"synthkit: {msg}", markup=False)

        with make_progress(not shown) as progress:
            manifest = sample_run(run, masks, out, device=device, precision=value_of(precision),
                                  sampler=value_of(sampler), steps=steps, eta=eta, per_mask=per_mask, seed=seed,
                                  batch_size=batch_size, background=background, label_space=value_of(label_space),
                                  strict=strict, guidance=guidance,
                                  progress=volume_progress(progress, "sample", not shown), on_note=note)
        if env_is_main():
            for s in manifest.get("skipped", []):
                err_console.print(f"synthkit: skipped mask {s['case']}: {s['reason']}", markup=False)
            if not quiet:
                err_console.print(f"synthkit: {len(manifest.get('items', []))} volume(s) in {out}", markup=False)
            if not manifest.get("items"):
                raise UsageError("no volume could be generated (every mask was skipped)")
