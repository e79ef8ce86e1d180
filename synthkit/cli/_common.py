"""Shared CLI plumbing: one-line errors, progress bars, seeding. Nothing heavy imported here."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console

from synthkit.errors import SynthkitError

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> None:
    """Print ``synthkit: error: <message>`` as one line on stderr and exit with ``code``."""
    err_console.print(f"synthkit: error: {message}", markup=False)
    raise typer.Exit(code)


def handle_errors(func: F) -> F:
    """Turn library errors raised inside a command into one stderr line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except SynthkitError as e:
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            err_console.print("synthkit: interrupted", markup=False)
            raise typer.Exit(130) from None
        except MemoryError:
            fail("out of memory; try a smaller --batch-size or --shape", 1)
        except Exception as e:  # a bug, not a user mistake: still one line unless debugging
            if os.environ.get("SYNTHKIT_DEBUG"):
                raise
            fail(
                f"internal error ({type(e).__name__}: {e}); "
                "rerun with SYNTHKIT_DEBUG=1 for the traceback and please report it",
                1,
            )

    return wrapper  # type: ignore[return-value]


def command_group(app: typer.Typer, name: str, help: str) -> typer.Typer:
    """A verb with sub-commands (``synthkit NAME SUB ...``) added to ``app``; shows its help
    when called without a sub-command."""
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


def not_yet(verb: str, issue: int) -> None:
    """Used by verbs whose capability has not landed: one line, exit code 2."""
    fail(f"'synthkit {verb}' is not available in this version yet (tracked as issue {issue})", 2)


def seed_everything(seed: int) -> None:
    """Seed the global RNGs. Only the CLI does this; the library takes explicit generators."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_progress(quiet: bool = False):
    """A rich progress bar (disabled with ``--quiet`` or when stderr is not a terminal... still
    shown on a terminal-less CI log as periodic lines is noise, so it is simply hidden)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet or not sys.stderr.isatty(),
        transient=False,
    )
