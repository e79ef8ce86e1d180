"""`synthkit segbench`: the paper's downstream segmentation benchmark (Table II) at any scale."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthkit.cli._common import (
    DeviceOption,
    console,
    handle_errors,
    make_progress,
    seed_everything,
)

_HELP = """Train a plain 3D U-Net (BCE, sigmoid, binary) on the tumour label of each --train set and
score it on the --test cohort: Dice, IoU, Accuracy, Recall, Precision (per case over the whole
volume, mean ± std over test cases), one row per training set.

Every case is reoriented to RAS, its intensities clipped to the 0.5-99.5th percentiles and mapped
to [-1, 1], and the whole volume resampled to --shape (labels nearest neighbour); predictions are
scored on that grid. Name a row with NAME=PATH and pool folders with commas, e.g.
--train real=data/real --train syn=data/syn --train real+syn=data/real,data/syn.
A 0/0 score is 1 for a case with empty reference and empty prediction, else 0."""


def register(app: typer.Typer) -> None:
    @app.command("segbench", help=_HELP)
    @handle_errors
    def segbench(
        train: Annotated[
            list[str],
            typer.Option(
                "--train",
                help="Training set: PATH or NAME=PATH[,PATH...] (folders pooled, any cohort layout); repeat.",
            ),
        ],
        test: Annotated[Path, typer.Option("--test", help="Test cohort folder (images + label maps).")],
        epochs: Annotated[int, typer.Option(min=1, help="Epochs per training set (paper: 100).")] = 100,
        batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Batch size (paper: 4).")] = 4,
        shape: Annotated[
            tuple[int, int, int], typer.Option(help="Benchmark grid D H W every case is resampled to.")
        ] = (32, 32, 32),
        label: Annotated[
            str, typer.Option(help="Target label: a name from dataset.json (tumour), a value (2) or values (1,2,3).")
        ] = "tumour",
        lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-3,
        channels: Annotated[int, typer.Option("--channels", min=1, help="U-Net channels at the first level.")] = 16,
        levels: Annotated[int, typer.Option(min=1, help="U-Net resolution levels.")] = 4,
        seed: Annotated[int, typer.Option(help="Seed for weights and batch order (same for every row).")] = 0,
        device: DeviceOption = "auto",
        json_path: Annotated[Path | None, typer.Option("--json", help="Write the full report (per-case scores) here.")] = None,
        strict: Annotated[bool, typer.Option(help="Stop at the first unreadable case instead of skipping it.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")] = False,
    ) -> None:
        from rich.table import Table

        from synthkit.errors import UsageError
        from synthkit.io.atomic import write_json
        from synthkit.segmentation.bench import METRIC_TITLES, parse_train_specs, run_segbench
        from synthkit.segmentation.metrics import METRICS
        from synthkit.segmentation.train import SegTrainConfig

        if any(s < 1 for s in shape):
            raise UsageError(f"--shape must be positive, got {shape}")
        try:
            cfg = SegTrainConfig(
                epochs=epochs, batch_size=batch_size, lr=lr, base_channels=channels, levels=levels, seed=seed
            )
        except ValueError as e:
            raise UsageError(str(e)) from None
        seed_everything(seed)
        specs = parse_train_specs(train)
        with make_progress(quiet) as progress:
            report = run_segbench(
                specs, test, cfg=cfg, shape=tuple(shape), label=label, device=device, strict=strict,
                progress=progress,
            )
        if json_path is not None:
            write_json(json_path, report)
        t = report["test"]
        table = Table(
            title=f"segbench: {t['n_cases']} test cases at {'x'.join(map(str, shape))}, "
            f"{epochs} epochs, label {label}",
        )
        table.add_column("Training set", overflow="fold")
        table.add_column("N", justify="right")
        for m in METRICS:
            table.add_column(METRIC_TITLES[m], justify="right", overflow="fold")
        for row in report["rows"]:
            cells = [f"{row['metrics'][m]['mean']:.4f}±{row['metrics'][m]['std']:.4f}" for m in METRICS]
            table.add_row(row["name"], str(row["n_train"]), *cells)
        if not quiet:
            console.print(table)
        else:
            for row in report["rows"]:
                console.print(
                    row["name"] + "\t" + "\t".join(f"{m}={row['metrics'][m]['mean']:.4f}" for m in METRICS),
                    markup=False,
                )
        skipped = t["skipped"] + sum(r["skipped"] for r in report["rows"])
        if skipped:
            console.print(f"[yellow]{skipped} unreadable case(s) skipped (use --strict to stop instead)[/]")
