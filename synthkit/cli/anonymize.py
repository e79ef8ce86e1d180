"""`synthkit anonymize`: not landed yet (issue 5)."""

from __future__ import annotations

import typer

from synthkit.cli._common import not_yet


def register(app: typer.Typer) -> None:
    @app.command("anonymize", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
    def anonymize(ctx: typer.Context) -> None:
        """(not available yet)"""
        not_yet("anonymize", 5)
