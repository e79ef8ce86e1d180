"""`synthkit masks perturb` and `synthkit masks replay`: parse, call :mod:`synthkit.masks`, print."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthkit.cli._common import (
    command_group,
    console,
    deprecated,
    err_console,
    handle_errors,
    make_progress,
)

_OPS_HELP = (
    "Operation to apply: move (default), transplant, remove, place, deform; options as "
    "name:key=value,key=value (e.g. move:elastic=1.5, place:radius_mm=6). Repeat, or join "
    "with '+', to chain operations in order."
)


def register(app: typer.Typer) -> None:
    sub = command_group(
        app, "masks",
        "Perturb segmentation masks (move, transplant, remove, place a tumour; deform) "
        "reproducibly, with the parameters saved for replay.",
    )

    @sub.command("perturb")
    @handle_errors
    def perturb(
        masks: Annotated[Path, typer.Argument(help="Cohort folder (any layout) or plain folder of mask NIfTIs.", show_default=False)],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output folder for {case}_{k}.nii.gz + {case}_{k}.json.", show_default=False)],
        ops: Annotated[list[str] | None, typer.Option("--ops", help=_OPS_HELP, show_default=False)] = None,
        per_mask: Annotated[int | None, typer.Option("--per-mask", "-n", min=1, help="Perturbed copies per mask (default 1).", show_default=False)] = None,
        n_per_mask: Annotated[int | None, typer.Option("--n-per-mask", min=1, hidden=True, help="Deprecated: --per-mask.")] = None,
        seed: Annotated[int, typer.Option("--seed", min=0, help="Same seed, same masks (bit for bit).")] = 0,
        label: Annotated[list[str] | None, typer.Option("--label", help="Tumour label(s), by name or value; all move as one object. Default: from the cohort's label names, else every non-head label.", show_default=False)] = None,
        head_label: Annotated[list[str] | None, typer.Option("--head-label", help="Head/brain label(s), by name or value. Default: names head/brain, else 1.", show_default=False)] = None,
        max_tries: Annotated[int, typer.Option("--max-tries", min=1, help="Parameter draws per operation before a case fails.")] = 20,
        strict: Annotated[bool, typer.Option("--strict", help="Stop at the first failing case.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Write perturbed copies of every mask, each with a JSON sidecar of its parameters.

        Exit code 0 when every case was perturbed, 1 when some failed (each reported on stderr,
        the others still written), 2 for a usage error.
        """
        from synthkit.errors import UsageError
        from synthkit.io import discover_cohort
        from synthkit.masks.ops import parse_op_specs
        from synthkit.masks.pipeline import perturb_cohort

        if n_per_mask is not None:
            if per_mask is not None:
                raise UsageError("give --per-mask (or the deprecated --n-per-mask), not both")
            deprecated("--n-per-mask", "--per-mask")
            per_mask = n_per_mask
        parse_op_specs(ops)  # usage errors before any work
        n_cases = len(discover_cohort(masks, need_images=False).cases)
        with make_progress(quiet) as progress:
            task = progress.add_task("perturbing masks", total=n_cases)
            report = perturb_cohort(
                masks, out, ops=ops, n_per_mask=per_mask or 1, seed=seed, tumour_labels=label,
                head_labels=head_label, strict=strict, max_tries=max_tries,
                on_case=lambda _cid: progress.advance(task),
            )
        for _cid, msg in report.failures:
            err_console.print(f"synthkit: error: {msg}", markup=False)
        n_ok = report.n_cases - len(report.failures)
        console.print(f"{len(report.written)} masks written to {out} ({n_ok} of {report.n_cases} cases)",
                      markup=False)
        if report.failures:
            raise typer.Exit(1)

    @sub.command("replay")
    @handle_errors
    def replay(
        params: Annotated[Path, typer.Argument(help="A {case}_{k}.json sidecar written by 'masks perturb'.", show_default=False)],
        masks: Annotated[Path, typer.Option("--masks", "-m", help="The cohort/folder the source mask came from.", show_default=False)],
        out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the replayed mask here (.nii.gz). Default: only compare with the output named in the sidecar.", show_default=False)] = None,
    ) -> None:
        """Re-apply recorded parameters to the source mask (bit-identical output).

        Without --out, checks the replay against the mask next to the sidecar: exit 0 if
        identical, 1 if not.
        """
        import numpy as np

        from synthkit.errors import UsageError
        from synthkit.io import read_nifti, write_nifti
        from synthkit.masks.pipeline import read_sidecar, replay_sidecar

        labels, affine = replay_sidecar(params, masks)
        if out is not None:
            write_nifti(out, labels, affine, is_label=True)
            console.print(f"replayed mask written to {out}", markup=False)
            return
        ref_path = params.parent / str(read_sidecar(params).get("output", ""))
        if not ref_path.is_file():
            raise UsageError("no output next to the sidecar to compare with; pass --out", ref_path)
        ref = read_nifti(ref_path, is_label=True)
        same = ref.data[0].shape == labels.shape and np.array_equal(ref.data[0], labels) \
            and np.allclose(ref.affine, affine)
        if not same:
            err_console.print(f"synthkit: error: replay differs from {ref_path}", markup=False)
            raise typer.Exit(1)
        console.print(f"replay identical to {ref_path}", markup=False)

    @sub.command("ops")
    def list_ops() -> None:
        """List the operations and their options."""
        import dataclasses

        from synthkit.masks.ops import get_operation, operations

        for name in operations():
            op = get_operation(name)
            opts = ", ".join(f"{f.name}={f.default}" for f in dataclasses.fields(op.options_cls)) or "-"
            console.print(f"{name}: {op.summary}\n    options: {opts}", markup=False)
