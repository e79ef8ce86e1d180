"""`synthkit sample RUN MASKS --out OUT`: generate synthetic volumes for masks (also under torchrun)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from synthkit.cli._common import err_console, handle_errors, make_progress


def register(app: typer.Typer) -> None:
    @app.command("sample")
    @handle_errors
    def sample(
        run: Annotated[str, typer.Argument(help="Run folder from `synthkit train` (or a shipped model name).")],
        masks: Annotated[Path, typer.Argument(help="A folder of mask NIfTIs, or a cohort (its masks are used).")],
        out: Annotated[Path, typer.Option("--out", "-o", help="Output cohort folder (nnU-Net raw layout).")],
        sampler: Annotated[str | None, typer.Option(help="ddpm (all T steps, as in the paper, default) or ddim. GAN runs: one generator pass, no sampler.")] = None,
        steps: Annotated[int | None, typer.Option(help="Sampling steps (DDIM; default: all T).")] = None,
        eta: Annotated[float, typer.Option(help="DDIM stochasticity (0: deterministic given the seed).")] = 0.0,
        per_mask: Annotated[int, typer.Option(help="Volumes to generate per mask.")] = 1,
        seed: Annotated[int, typer.Option(help="Base seed; each volume's seed derives from it, the case id and k.")] = 0,
        batch_size: Annotated[int, typer.Option(help="Masks prepared per round (results do not depend on it).")] = 1,
        background: Annotated[bool | None, typer.Option("--background/--no-background",
                              help="Hold the image at background outside the head. Default: on when the mask has a head/brain label.")] = None,
        label_space: Annotated[str, typer.Option(help="raw: masks labelled like the training files (label_map applied); network: already in the model's label values (e.g. BraTS masks with the brain label).")] = "raw",
        device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
        strict: Annotated[bool, typer.Option("--strict", help="Stop at the first unusable mask.")] = False,
        quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")] = False,
    ) -> None:
        """Generate synthetic images for every mask in MASKS, each on its mask's own grid."""
        from synthkit.errors import UsageError
        from synthkit.generate import sample_masks
        from synthkit.run import load
        from synthkit.training.ddp import cleanup, init_distributed

        if device not in ("cpu", "cuda"):
            raise UsageError(f"--device must be cpu or cuda, not {device!r}")
        if sampler not in (None, "ddpm", "ddim"):
            raise UsageError(f"--sampler must be ddpm or ddim, not {sampler!r}")
        dist = init_distributed(device)
        try:
            gen = load(run, dist.device)
            kind = gen.config.model_type
            if kind != "ddpm":  # a GAN baseline: one generator pass; the manifest records it as such
                if sampler is not None or steps is not None or eta != 0.0:
                    raise UsageError(f"--sampler, --steps and --eta apply to diffusion models; this run is a "
                                     f"{kind} GAN (one generator pass per volume)")
                sampler, steps = kind, 1
            sampler = sampler or "ddpm"
            if steps is not None and not 1 <= steps <= gen.diffusion.num_timesteps:
                raise UsageError(f"--steps must be in 1..{gen.diffusion.num_timesteps} for this model")
            if sampler == "ddpm" and steps not in (None, gen.diffusion.num_timesteps):
                raise UsageError("--steps applies to --sampler ddim (ddpm always runs all T steps)")

            def note(msg: str) -> None:
                if dist.is_main and not quiet:
                    err_console.print(f"synthkit: {msg}", markup=False)

            with make_progress(quiet or not dist.is_main) as progress:
                manifest = sample_masks(gen, masks, out, per_mask=per_mask, sampler=sampler, steps=steps, eta=eta,
                                        seed=seed, batch_size=batch_size, background=background,
                                        label_space=label_space, strict=strict,
                                        progress=progress, dist=dist, on_note=note)
        finally:
            cleanup(dist)
        if dist.is_main:
            for s in manifest.get("skipped", []):
                err_console.print(f"synthkit: skipped mask {s['case']}: {s['reason']}", markup=False)
            if not quiet:
                err_console.print(f"synthkit: {len(manifest.get('items', []))} volume(s) in {out}", markup=False)
            if not manifest.get("items"):
                raise UsageError("no volume could be generated (every mask was skipped)")
