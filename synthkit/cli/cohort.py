"""`synthkit cohort check` and `synthkit cohort demo`: validate a cohort folder, or write a
small demo cohort. The work is done by :mod:`synthkit.io`; this module only parses and prints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthkit.cli._common import command_group, console, handle_errors, make_progress


def _fmt_spacing(s: tuple[float, ...] | None) -> str:
    return "-" if s is None else " x ".join(f"{v:.3g}" for v in s)


def _fmt_shape(s: tuple[int, ...] | None) -> str:
    return "-" if s is None else " x ".join(str(v) for v in s)


def register(app: typer.Typer) -> None:
    sub = command_group(
        app, "cohort",
        "Inspect cohorts: validate every case ([bold]check[/]) or write a demo cohort ([bold]demo[/]).",
    )

    @sub.command("check")
    @handle_errors
    def check(
        cohort: Annotated[Path, typer.Argument(help="Cohort folder (nnU-Net raw, flat images/+masks/, BraTS, DICOM).", show_default=False)],
        json_path: Annotated[Path | None, typer.Option("--json", help="Also write the report as JSON here.", show_default=False)] = None,
        strict: Annotated[bool, typer.Option("--strict", help="Stop at the first unusable case (one line on stderr, exit 1).")] = False,
        masks_only: Annotated[bool, typer.Option("--masks-only", help="Cohort of masks without images (e.g. a folder of mask NIfTIs).")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar and no table; only the summary line.")] = False,
    ) -> None:
        """Read every case and report what is wrong with it.

        Exit code 0 when every case is usable, 1 when some are not, 2 when the folder is not a
        cohort.
        """
        from rich.table import Table

        from synthkit.io.atomic import write_json
        from synthkit.io.check import check_cohort, cohort_report
        from synthkit.io.cohort import discover_cohort

        found = discover_cohort(cohort, need_images=not masks_only)
        with make_progress(quiet) as progress:
            reports = check_cohort(found, progress=progress, strict=strict)

        n_ok = sum(r.ok for r in reports)
        if not quiet:
            table = Table(title=f"{found.root} ({found.layout}, channels: {', '.join(found.channel_names) or '-'})")
            for col in ("case", "ok", "shape", "spacing (mm)", "ch", "labels", "problems"):
                table.add_column(col, overflow="fold")
            for r in reports:
                table.add_row(
                    r.id,
                    "[green]yes[/]" if r.ok else "[red]no[/]",
                    _fmt_shape(r.shape),
                    _fmt_spacing(r.spacing),
                    "-" if r.channels is None else str(r.channels),
                    "-" if r.labels is None else ",".join(map(str, r.labels)),
                    "\n".join(r.problems),
                )
            console.print(table)
        if json_path is not None:
            write_json(json_path, cohort_report(found, reports))
        colour = "green" if n_ok == len(reports) else "red"
        console.print(f"[{colour}]{n_ok} of {len(reports)} cases usable[/] ({found.layout} cohort)", soft_wrap=True)
        if json_path is not None:
            console.print(f"report: {json_path}", markup=False, soft_wrap=True)
        if n_ok < len(reports):
            raise typer.Exit(1)

    @sub.command("demo")
    @handle_errors
    def demo(
        out: Annotated[Path, typer.Argument(help="Folder to write the demo cohort into (nnU-Net raw layout).", show_default=False)],
        n: Annotated[int, typer.Option("--n", min=1, help="Number of cases.")] = 20,
        size: Annotated[int, typer.Option("--size", min=8, help="Edge length of each cubic volume (voxels).")] = 48,
        seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same files).")] = 0,
        first: Annotated[int, typer.Option("--first", min=0, help="Index of the first subject: subject i is "
                         "the same in every cohort with this seed and size, so disjoint ranges give "
                         "disjoint cohorts (e.g. training 0-63, held-out from 1000).")] = 0,
        clean_copy: Annotated[Path | None, typer.Option("--clean-copy", help="Also write the cohort without its "
                              "Rician noise to this folder (for the noise ceiling of 'autoencoder eval --clean').",
                              show_default=False)] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Write a small synthetic demo cohort (head + tumour masks) to OUT."""
        from synthkit.io.demo_cohort import write_demo_cohort

        with make_progress(quiet) as progress:
            made = write_demo_cohort(out, n=n, size=size, seed=seed, progress=progress, first=first,
                                     **({"clean_copy": clean_copy} if clean_copy is not None else {}))
        n_cases = len(made.cases) if made is not None and hasattr(made, "cases") else n
        console.print(f"wrote {n_cases} cases to {out}", markup=False, soft_wrap=True)
