"""`synthkit augment`: a synthetic (or classically augmented) training set as an nnU-Net dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthkit.cli._common import (
    SAMPLING_PRECISION_HELP,
    BaselineChoice,
    DeviceOption,
    SamplerChoice,
    SamplingPrecisionChoice,
    console,
    deprecated,
    err_console,
    handle_errors,
    make_progress,
    steps_help,
    value_of,
)

_HELP = """Perturb the cohort's masks, generate an image for each with a trained model (--model RUN)
and write an nnU-Net v2 raw dataset (imagesTr/{case}_0000.nii.gz, labelsTr/{case}.nii.gz,
dataset.json) ready for nnUNetv2_plan_and_preprocess, MONAI or `synthkit segbench`.

--baseline classic needs no model: the same number of classically augmented copies of the real
cases (nnU-Net-style rotation, scaling, elastic, noise, blur, brightness, contrast, gamma,
mirroring with torchio; image and label together), the paper's "Augmented images" baseline.
--include-real adds the real cases. Same --seed, same files, bit for bit."""


def register(app: typer.Typer) -> None:
    @app.command("augment", help=_HELP)
    @handle_errors
    def augment(
        cohort: Annotated[Path, typer.Argument(help="Cohort folder (masks; images for --include-real / classic).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Dataset folder to write.")],
        per_mask: Annotated[int | None, typer.Option("--per-mask", min=0, help="Synthetic / augmented copies of every "
                            "usable mask of the cohort (default 1).", show_default=False)] = None,
        n: Annotated[int | None, typer.Option("--n", min=0, hidden=True, help="Deprecated: the total number of copies "
                     "(sources taken in turn); use --per-mask.")] = None,
        model: Annotated[str | None, typer.Option("--model", help="Run folder from `synthkit train` (or a shipped model name).")] = None,
        include_real: Annotated[bool, typer.Option("--include-real", help="Add the real cases too.")] = False,
        ops: Annotated[
            list[str] | None,
            typer.Option("--ops", help="Mask operations, e.g. move, move+deform:elastic=2 (default move)."),
        ] = None,
        sampler: Annotated[SamplerChoice, typer.Option(help="ddpm (all steps, the paper), ddim or dpmpp.")] = SamplerChoice.DDPM,
        steps: Annotated[int | None, typer.Option(min=1, help=steps_help())] = None,
        seed: Annotated[int, typer.Option(min=0, help="Seed; same seed -> identical dataset.")] = 0,
        baseline: Annotated[
            BaselineChoice | None, typer.Option("--baseline", help="classic: torchio augmentation of the real cases, no model.",
                                                show_default=False)
        ] = None,
        label: Annotated[
            list[str] | None, typer.Option("--label", help="Tumour label name(s)/value(s) the mask ops move.")
        ] = None,
        head_label: Annotated[
            list[str] | None, typer.Option("--head-label", help="Head/brain label name(s)/value(s).")
        ] = None,
        device: DeviceOption = "auto",
        precision: Annotated[SamplingPrecisionChoice, typer.Option(help=SAMPLING_PRECISION_HELP)] = SamplingPrecisionChoice.FP32,
        batch_size: Annotated[int | None, typer.Option(min=1, help="Volumes per network call (default: 1 on cpu, 4 "
                              "on cuda); within 1e-4 of the intensity range of batch size 1.")] = None,
        overwrite: Annotated[bool, typer.Option(help="Replace a dataset already in --out.")] = False,
        strict: Annotated[bool, typer.Option(help="Stop at the first failing case.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    ) -> None:
        from synthkit.augment.dataset import validate_nnunet_dataset
        from synthkit.cli._progress import volume_progress
        from synthkit.errors import UsageError
        from synthkit.jobs.augment import augment_cohort

        method = "classic" if value_of(baseline) == "classic" else "diffusion"
        if method == "classic" and (ops or model):
            raise UsageError("--baseline classic takes no --model or --ops")
        if n is not None:
            if per_mask is not None:
                raise UsageError("give --per-mask (or the deprecated --n), not both")
            deprecated("--n N (a total count)", "--per-mask K (K copies of every mask)")
        with make_progress(quiet) as progress:
            report = augment_cohort(
                cohort, out, n=n, per_mask=1 if n is None and per_mask is None else per_mask, method=method,
                model=model, include_real=include_real,
                ops=ops or None, sampler=value_of(sampler), steps=steps, seed=seed, tumour_labels=label,
                head_labels=head_label, device=device, overwrite=overwrite, strict=strict, batch_size=batch_size,
                precision=value_of(precision),
                progress=volume_progress(progress, "classic augmentation" if method == "classic" else "generate",
                                         quiet),
            )
        for msg in report.failures[:10]:
            err_console.print(f"synthkit: warning: {msg}", markup=False)
        if len(report.failures) > 10:
            err_console.print(f"synthkit: warning: ... and {len(report.failures) - 10} more", markup=False)
        problems = validate_nnunet_dataset(report.out, check_data=False)
        if problems:
            raise UsageError(f"written dataset failed validation: {problems[0]}")
        if not quiet:
            kind = "classic augmented" if method == "classic" else "synthetic"
            console.print(
                f"wrote {report.n_generated} {kind} + {report.n_real} real case(s) to {report.out} "
                "(nnU-Net v2 raw dataset)",
                markup=False,
            )
