"""`synthkit demo [--out DIR]`: the whole product on a synthetic demo cohort, as one HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthkit.cli._common import (
    DeviceOption,
    console,
    err_console,
    handle_errors,
    make_progress,
    seed_everything,
)
from synthkit.demo.pipeline import DEFAULT_MODEL


def register(app: typer.Typer) -> None:
    @app.command("demo")
    @handle_errors
    def demo(
        out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the demo (created; index.html inside).")] = Path("demo_out"),
        model: Annotated[str, typer.Option("--model", help="Shipped model name (demo-latent: 128^3, the default; demo: "
                                           "the 32^3 pixel model) or run folder from `synthkit train`.")] = DEFAULT_MODEL,
        train_steps: Annotated[int, typer.Option("--train-steps", min=0, help="First train a fresh model for N steps on the demo cohort (same recipe as --model) and use it.")] = 0,
        n_cases: Annotated[int | None, typer.Option("--n-cases", min=4, help="Demo cohort size (default 16; 6 with --quick).", show_default=False)] = None,
        steps: Annotated[int | None, typer.Option("--steps", min=1, help="DDIM sampling steps (default 30; 10 with --quick).", show_default=False)] = None,
        quick: Annotated[bool, typer.Option("--quick", help="Smaller stages (6 cases, 10 DDIM steps): about a quarter of the time.")] = False,
        seed: Annotated[int, typer.Option("--seed", min=0, help="Same seed, same files.")] = 0,
        device: DeviceOption = "auto",
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or stage lines; only where the page is.")] = False,
    ) -> None:
        """Build a demo cohort, generate synthetic images with the shipped model, anonymize,
        evaluate against baselines, perturb masks, and write one HTML page (OUT/index.html)."""
        import dataclasses

        from synthkit.demo.pipeline import QUICK, DemoSizes, run_demo

        sizes = QUICK if quick else DemoSizes()
        sizes = dataclasses.replace(sizes, **{k: v for k, v in (("n_cases", n_cases), ("steps", steps)) if v is not None})
        seed_everything(seed)
        with make_progress(quiet) as progress:
            def log(msg: str) -> None:
                if not quiet:
                    progress.console.print(f"synthkit demo: {msg}", markup=False, highlight=False)

            page = run_demo(out, model=model, train_steps=train_steps, seed=seed, sizes=sizes, device=device,
                            progress=progress, log=log)
        failed = _failed_stages(out)
        for line in failed if quiet else []:  # without --quiet the stage lines said it already
            err_console.print(f"synthkit demo: stage failed: {line}", markup=False)
        console.print(f"demo page: {page}", markup=False, soft_wrap=True)
        if failed:
            raise typer.Exit(1)


def _failed_stages(out: Path) -> list[str]:
    import json

    try:
        record = json.loads((out / "demo.json").read_text())
    except (OSError, ValueError):
        return []
    return [f"{s['stage']}: {s['error']}" for s in record.get("stages", []) if s.get("status") != "ok"]
