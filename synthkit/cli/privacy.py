"""`synthkit privacy`: not landed yet (issue 5)."""

from __future__ import annotations

import typer

from synthkit.cli._common import not_yet


def register(app: typer.Typer) -> None:
    @app.command("privacy", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def privacy(ctx: typer.Context) -> None:
        """(not available yet)"""
        not_yet("privacy", 5)
