"""`synthkit cohort ...`: not landed yet (issue 2)."""

from __future__ import annotations

import typer

from synthkit.cli._common import not_yet


def register(app: typer.Typer) -> None:
    sub = typer.Typer(help="(not available yet)", no_args_is_help=False)
    app.add_typer(sub, name="cohort")

    @sub.callback(invoke_without_command=True)
    def _group(ctx: typer.Context) -> None:
        not_yet("cohort", 2)
