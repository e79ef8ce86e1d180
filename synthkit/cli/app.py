"""The ``synthkit`` command. Each verb lives in its own module and only parses arguments and
calls the library; heavy imports (torch, nibabel) happen inside the commands.

A command-line mistake Click catches itself (unknown option, a value outside an option's
choices, a missing argument) is one line on stderr and exit code 2, like the library's own
usage errors (:func:`synthkit.cli._common.handle_errors`).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from synthkit.cli import (
    anonymize,
    augment,
    autoencoder,
    cohort,
    demo,
    evaluate,
    export,
    masks,
    privacy,
    sample,
    segbench,
    train,
    weights,
)
from synthkit.cli._common import err_console

try:  # typer >= 0.20 carries its own copy of click; older typer uses the click package
    from typer._click import exceptions as _click_errors
except ImportError:  # pragma: no cover
    from click import exceptions as _click_errors


class _OneLineErrors(TyperGroup):
    """Typer's group, with Click's usage errors printed as one line instead of a panel."""

    def main(self, *args: Any, standalone_mode: bool = True, **kwargs: Any) -> Any:
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        try:
            rv = super().main(*args, standalone_mode=False, **kwargs)
        except _click_errors.NoArgsIsHelpError:  # a bare `synthkit VERB`: show its help as usual
            return super().main(*args, standalone_mode=True, **kwargs)
        except _click_errors.ClickException as e:
            where = f" (see '{e.ctx.command_path} --help')" if getattr(e, "ctx", None) is not None else ""
            message = " ".join(e.format_message().split())
            err_console.print(f"synthkit: error: {message}{where}", markup=False)
            sys.exit(e.exit_code)
        except typer.Abort:
            err_console.print("synthkit: aborted", markup=False)
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    name="synthkit",
    cls=_OneLineErrors,
    help="Synthetic, shareable 3D medical image cohorts with mask-conditioned diffusion (Med-DDPM).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)


def version() -> str:
    """The installed version of the ``synthkit-med`` distribution (the package's own when not installed)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("synthkit-med")
    except PackageNotFoundError:
        from synthkit import __version__

        return __version__


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"synthkit {version()}")
        raise typer.Exit()


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                               help="Print the synthkit version and exit.")] = False,
) -> None:
    pass


# Order here is the order in --help.
for _module in (cohort, train, autoencoder, sample, masks, augment, evaluate, weights, privacy, anonymize, segbench,
                export, demo):
    _module.register(app)


def main() -> None:
    app()
