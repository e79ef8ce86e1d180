"""`synthkit evaluate`: score synthetic sets against a real cohort (3D-FID, MMD, precision /
recall / density / coverage, MS-SSIM, MSE).

Only parses arguments, calls :mod:`synthkit.metrics.evaluate`, prints the table and writes the
JSON / HTML report.
"""

from __future__ import annotations

import tempfile
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
        fidelity: Annotated[bool, typer.Option("--fidelity/--no-fidelity", help="Label fidelity (each label's contrast; Dice of a segmenter trained on the real set, against the masks the volumes were generated from) and tissue realism (intensity distance, CJV, power spectrum), each beside its real-vs-real reference.")] = True,
        segmenter: Annotated[str, typer.Option("--segmenter", help="Segmenter for label fidelity: 'synthkit' (a small U-Net trained on two halves of the real set, cached by the real cohort's content) or 'nnunet:MODEL_FOLDER' (your trained nnU-Net v2 model, run by nnunetv2's own predictor. synthkit reads its checkpoints with torch.load(weights_only=True), never nnunetv2's full unpickling: a checkpoint holding other pickled objects, or a plans.json naming a network or op outside dynamic_network_architectures / torch.nn, is refused).")] = "synthkit",
        seg_grid: Annotated[int, typer.Option("--seg-grid", help="Grid (voxels per side) the synthkit segmenter trains and predicts on (at most the evaluation grid's).", min=16)] = 64,
        seg_steps: Annotated[int, typer.Option("--seg-steps", help="Training steps of each synthkit segmenter half.", min=1)] = 600,
        controls: Annotated[bool, typer.Option("--controls", help="Also score four controls built from the real set (blurred, noise in mask, labels erased, texture scrambled): each metric should flag the control made to fail it.")] = False,
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
        grid = ev.grid_of(real)
        opts, external = _fidelity_options(fidelity, segmenter, min(seg_grid, *grid), seg_steps, seed, device)
        seed_everything(seed)
        extractor = ev.make_extractor(feature_weights, feature_depth, seed=seed, device=device, features=value_of(features))
        if extractor.kind == "random":
            err_console.print(f"synthkit: WARNING: {ev.RANDOM_WARNING}", style="bold red", markup=False)
        cache = None if no_cache else (cache_dir or default_cache_dir())
        names: list[str] = []
        for p in synth:
            n = p.resolve().name or str(p)
            names.append(n if n not in names else f"{n}_{len(names) + 1}")
        with make_progress(quiet) as progress, tempfile.TemporaryDirectory(prefix="synthkit-controls-") as tmp:
            if controls:
                from synthkit.metrics.baselines import write_controls

                built = write_controls(real, Path(tmp), seed=seed)
                synth, names = [*synth, *built.values()], [*names, *(f"control: {k}" for k in built)]
            load = lambda p, n: ev.load_set(p, extractor, grid, name=n, cache_dir=cache, strict=strict,
                                            progress=progress, fidelity=opts, external=external, seed=seed)
            real_set = load(real, real.resolve().name)
            sets = [load(p, n) for p, n in zip(synth, names)]
            result = ev.evaluate(real_set, sets, extractor, seed=seed, n_boot=n_boot,
                                 diversity_pairs=diversity_pairs, c2st=c2st, progress=progress, fidelity=opts,
                                 dataset_json=_dataset_labels(real), cache_dir=cache, device=_torch_device(device))
        for p in [p for s in (real_set, *sets) for p in s.problems]:
            err_console.print(f"synthkit: skipped: {p}", markup=False)

        _print_tables(result, extractor, c2st)
        if fidelity:
            _print_fidelity(result)
            if real_set.segmenter_trained is not None:
                console.print("label segmenter: " + ("trained on the real set (cached for the next run)"
                              if real_set.segmenter_trained else "from the cache (same real cohort and settings)"),
                              markup=False)
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

    from synthkit.metrics import tables as ev

    def show(title: str, header: list[str], rows: list[list[str]]) -> None:
        _table(title, header, rows, Table)

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


def _fidelity_options(on: bool, segmenter: str, grid: int, steps: int, seed: int, device: str):
    """(FidelityOptions or None, a user's segmenter or None) from the options; bad values are
    one usage line before any work."""
    from synthkit.errors import UsageError
    from synthkit.metrics.fidelity import FidelityOptions
    from synthkit.segmentation.multiclass import LabelSegConfig

    if not on:
        return None, None
    external = None
    if segmenter.startswith("nnunet:"):
        from synthkit.metrics.nnunet_segmenter import load_nnunet

        external = load_nnunet(segmenter.split(":", 1)[1], device=_torch_device(device))
    elif segmenter != "synthkit":
        raise UsageError(f"--segmenter must be 'synthkit' or 'nnunet:MODEL_FOLDER', got {segmenter!r}")
    return FidelityOptions(seg=LabelSegConfig(grid=grid, steps=steps, seed=seed), segmenter=segmenter), external


def _torch_device(device: str) -> str:
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _dataset_labels(real: Path) -> dict | None:
    """``{"labels": name -> value}`` of the real cohort (dataset.json, BraTS), else None."""
    from synthkit.errors import SynthkitError
    from synthkit.io.cohort import discover_cohort

    try:
        labels = discover_cohort(real, need_images=False).labels
    except SynthkitError:
        return None
    return {"labels": labels} if labels else None


def _print_fidelity(result: dict) -> None:
    """Label fidelity and tissue realism tables and which metric flagged which set."""
    from rich.table import Table

    from synthkit.metrics import tables

    real = result["real"]
    if real.get("label_fidelity"):
        _table("label fidelity: contrast (median; x real) and Dice of the real-trained segmenter (x ceiling)",
               tables.fidelity_header(result), tables.fidelity_rows(result), Table)
    for r in [real, *result["sets"]]:
        if r.get("label_fidelity_skipped"):
            err_console.print(f"synthkit: label fidelity skipped for {r['name']}: {r['label_fidelity_skipped']}",
                              markup=False)
    if real.get("tissue"):
        _table("tissue realism: distance to real (lower is better; real row: split-half reference)",
               tables.tissue_header(), tables.tissue_rows(result), Table)
    for line in tables.verdict_lines(result):
        console.print(line, markup=False)


def _table(title: str, header: list[str], rows: list[list[str]], table_cls) -> None:
    table = table_cls(title=title)
    for h in header:
        table.add_column(h, justify="left" if h == "Method" else "right", overflow="fold")
    for row in rows:
        table.add_row(*row)
    console.print(table)


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
