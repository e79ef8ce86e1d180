"""`synthkit masks ...`: not landed yet (issue 6)."""

from __future__ import annotations

import typer

from synthkit.cli._common import not_yet


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="(not available yet)", no_args_is_help=False)
    app.add_typer(sub, name="masks")

    @sub.callback(invoke_without_command=True)
    def _group(ctx: typer.Context) -> None:
        not_yet("masks", 6)
