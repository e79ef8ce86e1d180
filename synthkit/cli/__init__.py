"""Typer CLI: one module per verb. Import :data:`synthkit.cli.app.app` to embed it."""
