"""The ``synthkit`` command. Each verb lives in its own module and only parses arguments and
calls the library; heavy imports (torch, nibabel) happen inside the commands."""

from __future__ import annotations

import typer

from synthkit.cli import (
    anonymize,
    augment,
    autoencoder,
    cohort,
    demo,
    evaluate,
    masks,
    privacy,
    sample,
    segbench,
    train,
)

app = typer.Typer(
    name="synthkit",
    help="Synthetic, shareable 3D medical image cohorts with mask-conditioned diffusion (Med-DDPM).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode="rich",
)

# Order here is the order in --help.
for _module in (cohort, train, autoencoder, sample, masks, augment, evaluate, privacy, anonymize, segbench, demo):
    _module.register(app)


def main() -> None:
    app()
