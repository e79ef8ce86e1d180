"""`synthkit weights list` / `synthkit weights fetch NAME`: verified feature-network weights.

Only parses arguments and calls :mod:`synthkit.metrics.weights`.
"""

from __future__ import annotations

from typing import Annotated

import typer

from synthkit.cli._common import command_group, console, handle_errors


def register(app: typer.Typer) -> None:
    group = command_group(app, "weights", "Pretrained feature-network weights for evaluate / privacy: "
                                          "list them, fetch them verified by SHA-256.")

    @group.command("list")
    @handle_errors
    def list_weights() -> None:
        """Known weights, their pinned SHA-256 and whether they are in the cache."""
        from rich.table import Table

        from synthkit.metrics.weights import list_entries, weights_dir

        table = Table(title=f"weights (cache: {weights_dir()})")
        for h in ("Name", "Hugging Face file", "SHA-256", "Cached"):
            table.add_column(h, overflow="fold")
        for e in list_entries():
            pin = e["sha256"] if e["pinned"] else "UNPINNED: fetch needs --sha256 HEX"
            if e["pinned"]:
                pin += f" ({len(e['sources'])} source{'s' if len(e['sources']) != 1 else ''})"
            table.add_row(e["name"], f"{e['repo_id']}/{e['filename']}", pin, "yes" if e["cached"] else "no")
        console.print(table)
        console.print("deepbet (the default --features) ships with the deepbet package: nothing to fetch.",
                      markup=False)

    @group.command("fetch")
    @handle_errors
    def fetch_weights(
        name: Annotated[str, typer.Argument(help="Weights to fetch, e.g. medicalnet-resnet10 (see 'synthkit weights list').", show_default=False)],
        endpoint: Annotated[str | None, typer.Option("--endpoint", help="Hugging Face endpoint URL (a mirror); default https://huggingface.co or $HF_ENDPOINT.", show_default=False)] = None,
        sha256: Annotated[str | None, typer.Option("--sha256", help="Expected SHA-256 for an entry without a pinned one (must equal the pin otherwise).", show_default=False)] = None,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No download progress bar.")] = False,
    ) -> None:
        """Download NAME into the cache; a file whose SHA-256 differs is refused and removed."""
        from synthkit.metrics.weights import fetch

        path = fetch(name, endpoint=endpoint, sha256=sha256, quiet=quiet)
        console.print(f"{name}: verified, {path}", markup=False)
