"""`synthkit sample`: not landed yet (issue 3)."""

from __future__ import annotations

import typer

from synthkit.cli._common import not_yet


def register(app: typer.Typer) -> None:
    @app.command("sample", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def sample(ctx: typer.Context) -> None:
        """(not available yet)"""
        not_yet("sample", 3)
