"""Shared fixtures. Tests use tiny volumes (16^3) so the whole suite stays fast on 2 cores."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def cli():
    """Invoke the synthkit CLI in-process; returns a function (args) -> click Result."""
    from typer.testing import CliRunner

    from synthkit.cli.app import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke
