"""`synthkit export RUN --out DIR [--fp16]`: the part of a run folder that sampling needs.

Only parses arguments and calls :func:`synthkit.pipeline.export.export_run`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthkit.cli._common import console, handle_errors


def register(app: typer.Typer) -> None:
    @app.command("export")
    @handle_errors
    def export(
        run: Annotated[Path, typer.Argument(help="Run folder from `synthkit train` or `synthkit autoencoder train`.", show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", help="New folder to write (must not exist, or be empty).", show_default=False)],
        fp16: Annotated[bool, typer.Option("--fp16", help="Store the weights as float16 (half the size; loaded back into fp32).")] = False,
        autoencoder: Annotated[Path | None, typer.Option("--autoencoder", help="Latent runs: ship this autoencoder instead (same encoder, e.g. a decoder fine-tuned with --init --freeze-encoder).", show_default=False)] = None,
    ) -> None:
        """Copy config, EMA weights and side files (no checkpoints, cache, previews or logs), e.g.
        to share a model or ship it under $SYNTHKIT_MODELS; a latent run keeps its autoencoder."""
        from synthkit.pipeline.export import export_run

        path = export_run(run, out, half=fp16, autoencoder=autoencoder)
        size = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        console.print(f"exported {run} -> {path} ({size / 2**20:.1f} MB{', float16' if fp16 else ''})",
                      markup=False, soft_wrap=True)
