"""`synthkit segbench`: not landed yet (issue 6)."""

from __future__ import annotations

import typer

from synthkit.cli._common import not_yet


def register(app: typer.Typer) -> None:
    @app.command("segbench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def segbench(ctx: typer.Context) -> None:
        """(not available yet)"""
        not_yet("segbench", 6)
