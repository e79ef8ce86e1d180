"""`synthkit anonymize COHORT --model RUN --out OUT`: a shareable synthetic copy of a real cohort."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthkit.cli._common import (
    SAMPLING_PRECISION_HELP,
    DeviceOption,
    SamplerChoice,
    SamplingPrecisionChoice,
    deprecated,
    err_console,
    handle_errors,
    make_progress,
    steps_help,
    value_of,
)


def register(app: typer.Typer) -> None:
    @app.command("anonymize")
    @handle_errors
    def anonymize(
        cohort: Annotated[Path, typer.Argument(help="The real cohort (any layout synthkit reads, DICOM included); "
                          "its masks condition the generation.")],
        model: Annotated[str, typer.Option("--model", help="Run folder from `synthkit train` (or a shipped model name).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: nnU-Net raw layout, manifest, report.")],
        per_mask: Annotated[int | None, typer.Option("--per-mask", help="Synthetic volumes per input case (its mask) "
                            "(default 1).", show_default=False)] = None,
        per_case: Annotated[int | None, typer.Option("--per-case", hidden=True, help="Deprecated: --per-mask.")] = None,
        sampler: Annotated[SamplerChoice, typer.Option(help="ddpm (all T steps), ddim or dpmpp.")] = SamplerChoice.DDPM,
        steps: Annotated[int | None, typer.Option(help=steps_help())] = None,
        eta: Annotated[float, typer.Option(help="DDIM stochasticity.")] = 0.0,
        perturb_masks: Annotated[str, typer.Option(help="Perturb each mask before generation with synthkit.masks "
                                 "operations (masks are patient-derived): 'template' (the patient's tumour in a "
                                 "head from a reference pool that is not the patient's: the demo heads, or "
                                 "--template-heads; needs a head/brain label); 'deform' (a small whole-mask warp "
                                 "that keeps the patient's head outline), e.g. 'move+deform'; or 'none' to keep "
                                 "the masks as they are.")] = "template",
        template_heads: Annotated[Path | None, typer.Option(help="Head masks (NIfTI) of people who are not in the "
                                  "cohort, the pool of --perturb-masks template (default: synthkit's demo "
                                  "heads).")] = None,
        privacy_gate: Annotated[bool, typer.Option("--privacy-gate/--no-privacy-gate", help="Regenerate (new seed) "
                                "or drop volumes the memorization check flags as copies of training volumes.")] = True,
        gate_linkage: Annotated[bool | None, typer.Option("--gate-linkage/--no-gate-linkage", help="Also regenerate "
                                "or drop a volume whose own source subject is the re-identification attack's top-1 "
                                "match among the training subjects (default: on when some input case is a training "
                                "subject, i.e. its mask has the same voxels as a training mask).")] = None,
        max_retries: Annotated[int, typer.Option(help="New seeds tried for a flagged volume before it is dropped.")] = 3,
        train_cohort: Annotated[Path | None, typer.Option(help="The model's training cohort, for the memorization "
                                "check (needed when the run does not record it).")] = None,
        holdout: Annotated[Path | None, typer.Option(help="Real cases (with masks) the model was NOT trained on: "
                           "calibrates the copy flag and adds the loss-based membership-inference AUC to the "
                           "report.")] = None,
        feature_weights: Annotated[Path | None, typer.Option(help="MedicalNet weights for the feature space.")] = None,
        features: Annotated[bool, typer.Option("--features/--no-features", help="Also compare in feature space.")] = True,
        shape: Annotated[int, typer.Option(help="Comparison grid edge for the memorization check.")] = 32,
        alpha: Annotated[float, typer.Option(help="False-positive rate of the copy flag for the whole run (shared "
                         "over all volumes and statistics).")] = 0.05,
        seed: Annotated[int, typer.Option(help="Seed for output ids and sampling. It links outputs to inputs: keep it "
                        "private.")] = 0,
        mapping: Annotated[Path | None, typer.Option(help="Write the input->output id mapping here (must be "
                           "outside --out).")] = None,
        dicom: Annotated[bool, typer.Option("--dicom", help="Also export every synthetic image as a DICOM series "
                         "(PS3.15 Basic Application Level Confidentiality Profile).")] = False,
        keep_geometry: Annotated[bool, typer.Option("--keep-geometry", help="Write each output on its source case's "
                                 "exact affine (scanner position, obliquity, voxel size): a link back to the input "
                                 "scan. Default: the same voxels and orientation on a canonical geometry (voxel "
                                 "sizes rounded to 0.01 mm, no obliquity, centred on the world origin).")] = False,
        device: DeviceOption = "auto",
        precision: Annotated[SamplingPrecisionChoice, typer.Option(help=SAMPLING_PRECISION_HELP)] = SamplingPrecisionChoice.FP32,
        batch_size: Annotated[int | None, typer.Option(help="Volumes per network call (default: 1 on cpu, 4 on "
                              "cuda); within 1e-4 of the intensity range of batch size 1.")] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Generate a synthetic image for every mask of COHORT, check each against the training cohort
        (regenerate or drop copies, and volumes re-identified as their own source when the inputs are
        training subjects), and write a de-identified nnU-Net cohort with manifest and report.

        Masks follow the run's recorded label rules (label mapping, brain label from the first image
        channel), so a raw BraTS cohort needs no flags. Outputs are on a canonical geometry, not the
        source scan's exact affine, unless --keep-geometry."""
        from synthkit.cli._progress import volume_progress
        from synthkit.errors import UsageError
        from synthkit.jobs.anonymize import AnonymizeSettings
        from synthkit.jobs.anonymize import anonymize as run_anonymize
        from synthkit.privacy.audit.check import CheckSettings
        from synthkit.runtime.memory import freed_memory_kept

        if per_case is not None:
            if per_mask is not None:
                raise UsageError("give --per-mask (or the deprecated --per-case), not both")
            deprecated("--per-case", "--per-mask")
        per_case = per_mask if per_mask is not None else per_case if per_case is not None else 1
        if per_case < 1 or max_retries < 0:
            raise UsageError("--per-mask must be >= 1 and --max-retries >= 0")
        if batch_size is not None and batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if shape < 8 or not 0 < alpha < 0.5:
            raise UsageError("--shape must be >= 8 and --alpha in (0, 0.5)")
        ops = _mask_ops(perturb_masks, template_heads)
        settings = AnonymizeSettings(
            per_case=per_case, sampler=value_of(sampler), steps=steps, eta=eta, seed=seed, privacy_gate=privacy_gate,
            gate_linkage=gate_linkage, max_retries=max_retries, perturb_masks=ops, dicom=dicom, keep_geometry=keep_geometry,
            check=CheckSettings(shape=(shape,) * 3, alpha=alpha, use_features=features, seed=seed),
        )

        def note(msg: str) -> None:
            if not quiet:
                err_console.print(f"synthkit: {msg}", markup=False)

        with make_progress(quiet) as progress, freed_memory_kept():  # same numbers, fewer page faults
            result = run_anonymize(cohort, model, out, settings=settings, train_cohort=train_cohort, holdout=holdout,
                                   mapping=mapping, feature_weights=feature_weights, device=device, batch_size=batch_size,
                                   precision=value_of(precision), on_note=note, progress=volume_progress(progress, "anonymize", quiet))
        _report(result, out, note)


def _mask_ops(perturb_masks: str, template_heads: Path | None) -> str | None:
    """The ``--perturb-masks`` spec (None for 'none'), with ``--template-heads`` as the template
    operation's ``heads`` option; an unknown operation is a usage error before any case runs."""
    from synthkit.errors import UsageError
    from synthkit.masks import parse_op_specs

    ops = None if perturb_masks.strip().lower() in ("", "none") else perturb_masks
    specs = parse_op_specs(ops) if ops is not None else []
    if template_heads is None:
        return ops
    if not any(s.name == "template" for s in specs):
        raise UsageError("--template-heads is the pool of --perturb-masks template; add 'template' to --perturb-masks")
    if not template_heads.is_dir():
        raise UsageError("--template-heads must be a folder of head masks", template_heads)
    from synthkit.io.nifti import is_nifti

    if not any(d.is_dir() and any(p.is_file() and is_nifti(p) for p in d.iterdir())
               for d in (template_heads, template_heads / "labelsTr")):
        raise UsageError("--template-heads: no NIfTI head masks in the folder (nor in its labelsTr/)", template_heads)
    folder = str(template_heads.resolve())
    if any(c in folder for c in "+,"):
        raise UsageError("--template-heads: the folder path must not contain '+' or ','", template_heads)
    parts = []
    for s in specs:
        opts = {**s.options, "heads": folder} if s.name == "template" else dict(s.options)
        parts.append(s.name + (":" + ",".join(f"{k}={v}" for k, v in opts.items()) if opts else ""))
    spec = "+".join(parts)
    parse_op_specs(spec)
    return spec


def _report(result, out: Path, note) -> None:
    """Tell the operator what anonymize did (notes, failed cases); exit 1 when cases failed."""
    from synthkit.errors import UsageError

    if not result.privacy_checked:
        note("memorization check NOT run (no training cohort); the privacy report says so")
    if result.resumed:
        note(f"{result.resumed} volume(s) were already done and kept")
    if result.dropped:
        note(f"{len(result.dropped)} volume(s) dropped by the privacy gate (flagged as copies or re-identified; "
             "see privacy_report.html)")
    for case_id, msg in result.failed:
        err_console.print(f"synthkit: case {case_id} failed: {msg}", markup=False)
    n_ok = len(result.written) + result.resumed
    note(f"{len(result.written)} new synthetic volume(s) in {out}")
    if result.failed:
        if n_ok == 0 and not result.dropped:
            raise UsageError(f"no case could be anonymized ({len(result.failed)} failed)")
        err_console.print(f"synthkit: {len(result.failed)} case(s) failed", markup=False)
        raise typer.Exit(1)
