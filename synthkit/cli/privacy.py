"""`synthkit privacy TRAIN SYNTH`: is any synthetic volume a (near-)copy of a training volume?"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthkit.cli._common import DeviceOption, console, err_console, handle_errors, make_progress


def register(app: typer.Typer) -> None:
    @app.command("privacy")
    @handle_errors
    def privacy(
        train: Annotated[Path, typer.Argument(help="The training cohort (any layout synthkit reads).")],
        synth: Annotated[Path, typer.Argument(help="The synthetic cohort to check (e.g. `synthkit sample` output).")],
        holdout: Annotated[Path | None, typer.Option(help="Real cases NOT trained on: calibrates the copy flag "
                           "and enables the closer-to-train test and membership-inference AUC.")] = None,
        json_path: Annotated[Path | None, typer.Option("--json", help="Write the full results as JSON here.")] = None,
        report: Annotated[Path | None, typer.Option(help="Write privacy_report.html (flagged pairs side by side) "
                          "into this folder.")] = None,
        feature_weights: Annotated[Path | None, typer.Option(help="MedicalNet weights (.pth) for the feature "
                                   "space (default: $SYNTHKIT_MEDICALNET_WEIGHTS, else a seeded random network).")] = None,
        features: Annotated[bool, typer.Option("--features/--no-features", help="Also compare in MedicalNet "
                            "feature space.")] = True,
        shape: Annotated[int, typer.Option(help="Comparison grid edge (voxels); volumes are resampled to shape^3.")] = 32,
        max_shift: Annotated[int, typer.Option(help="Integer shifts searched per axis: [-s, s].")] = 2,
        flips: Annotated[bool, typer.Option("--flips/--no-flips", help="Also compare against left-right mirrored "
                         "training volumes.")] = True,
        alpha: Annotated[float, typer.Option(help="False-positive rate of the copy flag for the whole run (shared "
                         "over all synthetic volumes and statistics).")] = 0.05,
        seed: Annotated[int, typer.Option(help="Seed for the random feature network, the planted-copy check and "
                        "the membership attack's noise.")] = 0,
        model: Annotated[str | None, typer.Option("--model", help="The trained run (folder or model name) the "
                         "synthetic cohort came from: runs the loss-based membership-inference attack on TRAIN "
                         "(members) vs --holdout (non-members).")] = None,
        sources: Annotated[Path | None, typer.Option(help="Which training case each synthetic volume was made "
                           "from, for the re-identification attack: a `synthkit sample` manifest.json, an "
                           "augment.json or an anonymize --mapping file (default: SYNTH/manifest.json or "
                           "augment.json, else the {case}_s{k} names).")] = None,
        device: DeviceOption = "auto",
        strict: Annotated[bool, typer.Option("--strict", help="Stop at the first unreadable case.")] = False,
        no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the reference cache (the "
                            "prepared training side and the planted-copy self-test, kept in $SYNTHKIT_CACHE_DIR or "
                            "~/.cache/synthkit by the contents of TRAIN and --holdout).")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar, no table.")] = False,
    ) -> None:
        """Find each synthetic volume's nearest training subject (residuals from the cohort's mean
        anatomy after affine alignment, head shape, voxels and features), flag likely copies with
        bounds calibrated on real data, check them with planted copies, and run the attacks
        (re-identification of each volume's source, loss-based membership inference with --model)."""
        from synthkit.errors import UsageError
        from synthkit.io.atomic import write_json
        from synthkit.privacy.audit.check import CheckSettings
        from synthkit.privacy.audit.report import write_report
        from synthkit.privacy.audit.runner import audit, count_cases

        if shape < 8:
            raise UsageError(f"--shape must be at least 8, got {shape}")
        if not 0 <= max_shift < shape // 2:
            raise UsageError(f"--max-shift must be in 0..{shape // 2 - 1}")
        if not 0 < alpha < 0.5:
            raise UsageError(f"--alpha must be in (0, 0.5), got {alpha}")
        if sources is not None and not sources.is_file():
            raise UsageError("file not found (--sources)", sources)
        if feature_weights is not None and not features:
            raise UsageError("--feature-weights given together with --no-features")
        settings = CheckSettings(shape=(shape,) * 3, max_shift=max_shift, flips=flips, alpha=alpha,
                                 use_features=features, seed=seed)
        total = count_cases(train) + count_cases(synth) + (count_cases(holdout) if holdout else 0)
        with make_progress(quiet) as progress:
            task = progress.add_task("reading volumes", total=total)
            result, pairs = audit(train, synth, holdout, settings=settings, feature_weights=feature_weights,
                                  strict=strict, on_case=lambda: progress.advance(task), sources=sources,
                                  model=model, device=device, cache=not no_cache)
        if json_path is not None:
            write_json(json_path, result.to_dict())
        if report is not None:
            write_report(report, result, pairs)
        for e in result.cohort.get("errors", []):
            err_console.print(f"synthkit: skipped {e['set']} case {e['case']}: {e['error']}", markup=False)
        for line in result.not_computed:
            err_console.print(f"synthkit: not computed: {line}", markup=False)
        planted = result.calibration.get("planted_copies") or {}
        if planted and not planted["passed"]:
            err_console.print(f"synthkit: warning: {planted['verdict']}", markup=False)
        if not quiet:
            _print_summary(result)


def _print_summary(result) -> None:
    from rich.table import Table

    c = result.cohort
    th = result.calibration["thresholds"]
    bounds = ", ".join(f"{k} {'>' if t['direction'] == 'above' else '<'} {t['value']:.4f}" for k, t in th.items())
    console.print(f"{c['n_flagged']} of {c['n_synthetic']} synthetic volume(s) flagged as possible copies "
                  f"({bounds}; calibrated {result.calibration['reference']}).", markup=False)
    planted = result.calibration.get("planted_copies")
    if planted:
        console.print(planted["verdict"] + ".", markup=False)
    ct, mia = c.get("closer_to_train"), c.get("membership_inference")
    if ct:
        console.print(f"closer to train than holdout: {ct['fraction']:.3f} (expected {ct['expected']:.3f}, "
                      f"p = {ct['p_value']:.3g}); nearest-synthetic membership AUC {mia['auc']:.3f} "
                      f"(p = {mia['p_value']:.3g})")
    link = result.attacks.get("linkage")
    if link and "best" in link:
        b = link["best"]
        console.print(f"re-identification ({link['n_linked']} linked volumes, {b['n_train']} subjects): top-1 "
                      f"{b['top1']['rate']:.3f} (chance {b['top1']['chance']:.3f}, p = {b['top1']['p_value']:.3g}), "
                      f"top-5 {b['top5']['rate']:.3f} (chance {b['top5']['chance']:.3f}) by {b['statistic']}")
    mem = result.attacks.get("membership")
    if mem:
        console.print(f"membership inference from the denoising loss: AUC {mem['auc']:.3f} "
                      f"({mem['confidence']:.0%} CI {mem['ci'][0]:.3f}-{mem['ci'][1]:.3f}, p = {mem['p_value']:.3g})")
    if result.flagged:
        table = Table("synthetic", "nearest training", "identity", "shape dice", "similarity", "reason")
        for v in result.flagged:
            table.add_row(v["id"], v["nearest"], f"{v['identity']:.4f}", f"{v['shape_dice']:.4f}",
                          f"{v['similarity']:.4f}", v["reason"])
        console.print(table)
