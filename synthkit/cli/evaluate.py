"""`synthkit evaluate`: score synthetic sets against a real cohort (3D-FID, MMD, precision /
recall / density / coverage, MS-SSIM, MSE).

Only parses arguments, calls :mod:`synthkit.metrics.evaluate`, prints the table and writes the
JSON / HTML report.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthkit.cli._common import (
    DeviceOption,
    FeaturesChoice,
    console,
    err_console,
    handle_errors,
    make_progress,
    seed_everything,
    value_of,
)


def register(app: typer.Typer) -> None:
    @app.command("evaluate")
    @handle_errors
    def evaluate(
        real: Annotated[Path, typer.Argument(help="Real cohort (nnU-Net, flat, BraTS, DICOM) or folder of NIfTI volumes.", show_default=False)],
        synth: Annotated[list[Path], typer.Argument(help="One or more synthetic sets (cohort or NIfTI folder); one table row each.", show_default=False)],
        features: Annotated[FeaturesChoice, typer.Option("--features", help="Feature extractor: deepbet (pretrained 3D brain-MRI encoder, offline), medicalnet-resnet10/18/34/50 (weights from 'synthkit weights fetch' or --feature-weights), random (seeded random MedicalNet: FID comparable within this run only), or auto: --feature-weights / $SYNTHKIT_MEDICALNET_WEIGHTS if given, else deepbet.")] = FeaturesChoice.AUTO,
        feature_weights: Annotated[Path | None, typer.Option("--feature-weights", help="MedicalNet checkpoint (.pth, official format) for auto / medicalnet-resnetN.", show_default=False)] = None,
        feature_depth: Annotated[int, typer.Option("--feature-depth", help="MedicalNet ResNet depth for --feature-weights and random: 10, 18, 34 or 50 (must match the weights).")] = 10,
        json_path: Annotated[Path | None, typer.Option("--json", help="Write all metrics and settings as JSON here.", show_default=False)] = None,
        report: Annotated[Path | None, typer.Option("--report", help="Write an HTML report (index.html + PNGs) into this folder.", show_default=False)] = None,
        device: DeviceOption = "auto",
        seed: Annotated[int, typer.Option("--seed", help="Seed for the random extractor, bootstrap and pair sampling.")] = 0,
        n_boot: Annotated[int, typer.Option("--n-boot", help="Bootstrap replicates for FID/MMD intervals.", min=10)] = 100,
        diversity_pairs: Annotated[int, typer.Option("--diversity-pairs", help="Random pairs per set for MS-SSIM diversity.", min=1)] = 100,
        cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Feature cache (default $SYNTHKIT_CACHE_DIR or ~/.cache/synthkit).", show_default=False)] = None,
        no_cache: Annotated[bool, typer.Option("--no-cache", help="Do not read or write the feature cache.")] = False,
        c2st: Annotated[bool, typer.Option("--c2st", help="Also run a classifier two-sample test (small 3D CNN, held-out AUC).")] = False,
        reader_study: Annotated[tuple[int, Path] | None, typer.Option("--reader-study", help="N DIR: write a blinded reader-study kit (N real + N synthetic slices of the first synthetic set).", show_default=False)] = None,
        strict: Annotated[bool, typer.Option("--strict", help="Stop at the first unreadable case instead of skipping it.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars; print only the table and warnings.")] = False,
    ) -> None:
        """Compare synthetic volumes with real ones: FID, MMD and precision / recall / density /
        coverage of pretrained 3D features (deepbet by default, or MedicalNet), MS-SSIM (paired
        and within-set diversity) and paired MSE, each with a bootstrap interval, like Table I of
        the Med-DDPM paper."""

        from synthkit.errors import UsageError
        from synthkit.metrics import evaluate as ev
        from synthkit.metrics.features import default_cache_dir

        if feature_depth not in (10, 18, 34, 50):
            raise UsageError(f"--feature-depth must be 10, 18, 34 or 50, got {feature_depth}")
        for folder in (real, *synth):
            ev.list_cases(folder)  # a missing/empty folder is one error line before any work
        seed_everything(seed)
        extractor = ev.make_extractor(feature_weights, feature_depth, seed=seed, device=device, features=value_of(features))
        if extractor.kind == "random":
            err_console.print(f"synthkit: WARNING: {ev.RANDOM_WARNING}", style="bold red", markup=False)
        cache = None if no_cache else (cache_dir or default_cache_dir())
        grid = ev.grid_of(real)
        names: list[str] = []
        for p in synth:
            n = p.resolve().name or str(p)
            names.append(n if n not in names else f"{n}_{len(names) + 1}")
        with make_progress(quiet) as progress:
            real_set = ev.load_set(real, extractor, grid, name=real.resolve().name, cache_dir=cache,
                                   strict=strict, progress=progress)
            sets = [ev.load_set(p, extractor, grid, name=n, cache_dir=cache, strict=strict, progress=progress)
                    for p, n in zip(synth, names)]
            result = ev.evaluate(real_set, sets, extractor, seed=seed, n_boot=n_boot,
                                 diversity_pairs=diversity_pairs, c2st=c2st, progress=progress)
        for p in [p for s in (real_set, *sets) for p in s.problems]:
            err_console.print(f"synthkit: skipped: {p}", markup=False)

        _print_tables(result, extractor, c2st)
        if reader_study is not None:
            from synthkit.metrics.reader_study import write_kit

            n, kit_dir = reader_study
            kit = write_kit(real_set, sets[0], n, kit_dir, seed=seed)
            console.print(f"reader study: {kit['shown']} (answer key kept apart: {kit['key']})", markup=False)
        if json_path is not None:
            ev.save_json(result, json_path)
            console.print(f"json: {json_path}", markup=False)
        if report is not None:
            from synthkit.metrics.report import write_report

            console.print(f"report: {write_report(result, real_set, sets, report)}", markup=False)
        if result["warning"]:
            err_console.print(f"synthkit: WARNING: {result['warning']}", style="bold red", markup=False)

    _register_reader_score(app)


def _print_tables(result: dict, extractor, c2st: bool) -> None:
    """The Table I-style metrics, precision / recall / density / coverage, and what they used."""
    from rich.table import Table

    from synthkit.metrics import evaluate as ev

    def show(title: str, header: list[str], rows: list[list[str]]) -> None:
        table = Table(title=title)
        for h in header:
            table.add_column(h, justify="left" if h == "Method" else "right", overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)

    show(f"synthkit evaluate ({extractor.short} features)"
         + (" (RANDOM extractor: FID not comparable)" if result["warning"] else ""), ev.TABLE_HEADER, ev.table_rows(result))
    show(f"precision / recall / density / coverage (k = {result['settings']['prdc']['k']})", ev.PRDC_HEADER,
         ev.prdc_rows(result))
    ms = result["settings"]["ms_ssim"]
    console.print(f"features: {extractor.name}; weights sha256 {extractor.weights[:16]}", markup=False)
    console.print(f"grid {' x '.join(map(str, result['settings']['grid']))}; MS-SSIM: {ms['scales']} scales, "
                  f"kernel {ms['kernel_size']}, sigma {ms['sigma']}", markup=False)
    if c2st:
        for r in result["sets"]:
            c = r["c2st"]
            console.print(f"C2ST {r['name']}: AUC {c['auc']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}] "
                          "(0.5 = indistinguishable)", markup=False)


def _register_reader_score(app: typer.Typer) -> None:
    @app.command("reader-score")
    @handle_errors
    def reader_score(
        sheet: Annotated[Path, typer.Argument(help="Filled-in answer_sheet.csv (image,answer: real|synthetic).", show_default=False)],
        key: Annotated[Path, typer.Argument(help="answer_key.csv written by 'synthkit evaluate --reader-study'.", show_default=False)],
        json_path: Annotated[Path | None, typer.Option("--json", help="Also write the scores as JSON here.", show_default=False)] = None,
    ) -> None:
        """Score a blinded reader study: accuracy, sensitivity, specificity, binomial p-value."""
        from synthkit.metrics.reader_study import score

        r = score(sheet, key)
        console.print(
            f"{r['correct']}/{r['n']} correct (accuracy {r['accuracy']:.3f}, sensitivity {r['sensitivity']:.3f}, "
            f"specificity {r['specificity']:.3f}); p = {r['p_value']:.3g} vs chance"
            + (f"; {r['unanswered']} unanswered" if r["unanswered"] else ""),
            markup=False,
        )
        if json_path is not None:
            from synthkit.io.atomic import write_json

            write_json(json_path, r)
