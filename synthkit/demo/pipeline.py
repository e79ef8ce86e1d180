"""The stages of ``synthkit demo`` and :func:`run_demo`, which runs them and writes the page.

Stages (each prints one line: what it did, where, how long):

1. ``cohort``: the MNI152 demo cohort at the model's grid size, held-out subjects (from
   index 1000: no model here was trained on them), checked (fatal on failure); plus the
   model's training cohort when it has to be rebuilt from the recipe the run records (the
   shipped model: subjects 0-63) or for ``train_steps``: the memorization check's reference;
2. ``train`` (only with ``train_steps > 0``): a fresh model with the recipe of ``model``
   (its ``config.json``; the ``small`` preset at 32^3 when no model is installed), trained
   for ``train_steps`` steps on demo subjects 0..n-1 and used instead (fatal on failure);
3. ``sample``: one synthetic volume per mask (DDIM, background held) plus several samples for
   one mask;
4. ``anonymize``: the de-identified synthetic cohort through the privacy gate, with its
   privacy report;
5. ``evaluate``: real vs synthetic vs two trivial baselines (blurred real, noise in mask),
   with the evaluation report;
6. ``perturb``: a few perturbed masks and their generated images (``synthkit.augment``);
7. the page ``OUT/index.html`` (:mod:`synthkit.demo.page`).

The stages live in :mod:`synthkit.demo.stages`, their shared state in :mod:`synthkit.demo.state`.
A failing stage among 3-6 is reported in one line and marked failed on the page; the others go
on. Everything random derives from ``seed``: same seed, same files.

Output folder ``OUT``::

    index.html  demo.json  img/*.png  model_card.md
    cohort/ (real demo cohort, held out)   [training_cohort/ (the model's training data)]
    synthetic/  diversity/ (sample_masks outputs)
    anonymized/ (privacy_report.html)   baselines/{blurred,noise}/
    evaluation/ (index.html, metrics.json)   perturbed/ (augment.json)   [model/ (trained run)]
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthkit.demo.state import QUICK, Context, DemoSizes
from synthkit.errors import CheckpointError, UsageError

__all__ = ["DEFAULT_MODEL", "QUICK", "DemoSizes", "run_demo"]

#: The shipped model the demo uses: latent Med-DDPM at 128^3 (issue 12); ``--model demo`` is the
#: 32^3 pixel model.
DEFAULT_MODEL = "demo-latent"
MARKER = ".synthkit-demo"
#: Sub-folders the demo writes (removed before a rerun into the same folder).
OWNED = ("img", "cohort", "training_cohort", "model", "synthetic", "diversity", "anonymized", "baselines", "evaluation", "perturbed")


# ----------------------------------------------------------------------------- model


def _model_recipe(model: str | Path, train_steps: int) -> tuple[Any, Path | None]:
    """(RunConfig, run folder or None) of ``model``; a fresh-training recipe when the default
    model is not installed and ``train_steps > 0``."""
    from synthkit.config import ConfigError, DiffusionConfig, RunConfig, TrainConfig, model_config
    from synthkit.pipeline import resolve_run

    try:
        run_dir = resolve_run(model)
    except CheckpointError:
        if str(model) != DEFAULT_MODEL:
            raise
        if train_steps > 0:
            return RunConfig(model=model_config("small"), diffusion=DiffusionConfig(prediction="v"),
                             train=TrainConfig(lr=1e-3, lr_final=1e-4, batch_size=2), preset="small"), None
        raise CheckpointError(f"the shipped demo model is not installed (synthkit/assets/models/{DEFAULT_MODEL}); "
                              "pass --model RUN, or --train-steps N to train one first") from None
    try:
        return RunConfig.load(run_dir / "config.json"), run_dir
    except FileNotFoundError:
        raise CheckpointError("not a run folder: config.json is missing", run_dir) from None
    except ConfigError as e:
        raise CheckpointError(f"bad run config ({e})", run_dir / "config.json") from None


def _prepare_out(out: Path) -> None:
    from synthkit.io.atomic import write_text

    if out.exists() and not out.is_dir():
        raise UsageError("exists and is not a folder", out)
    if out.is_dir() and any(out.iterdir()) and not (out / MARKER).is_file():
        raise UsageError("the folder exists and is not a synthkit demo output; choose a new --out", out)
    out.mkdir(parents=True, exist_ok=True)
    for name in OWNED:
        if (out / name).is_dir() and name != "cohort":  # write_demo_cohort rewrites its own folder
            shutil.rmtree(out / name)
    for name in ("index.html", "demo.json", "model_card.md"):
        (out / name).unlink(missing_ok=True)
    write_text(out / MARKER, "synthkit demo output folder\n")
    (out / "img").mkdir()


# ----------------------------------------------------------------------------- driver


def run_demo(out: str | Path, *, model: str | Path = DEFAULT_MODEL, train_steps: int = 0, seed: int = 0,
             sizes: DemoSizes | None = None, device: str = "cpu", progress: Any = None,
             log: Callable[[str], None] | None = None) -> Path:
    """Run every demo stage into ``out`` and write ``out/index.html``; returns its path.

    ``model``: a run folder or shipped model name (default: the shipped ``demo`` weights); its
    ``config.json`` fixes the grid size of the demo cohort. ``train_steps > 0``: first train a
    fresh model with that recipe on the demo cohort and use it. ``sizes``: stage sizes
    (:class:`DemoSizes`, :data:`QUICK`). ``progress``: a rich ``Progress`` or None. ``log``:
    called with one line per stage. Raises :class:`~synthkit.errors.SynthkitError` when the
    model cannot be used or the cohort cannot be built; other stage failures are reported on
    the page.
    """
    from synthkit.demo import stages
    from synthkit.demo.page import write_page
    from synthkit.io.atomic import write_json, write_text
    from synthkit.pipeline import load

    if train_steps < 0:
        raise UsageError(f"--train-steps must be >= 0, got {train_steps}")
    if device != "cpu" and re.fullmatch(r"cuda(:\d+)?", str(device)) is None:
        raise UsageError(f"device must be cpu, cuda or cuda:N, not {device!r}")
    sizes = sizes or DemoSizes()
    out = Path(out)
    cfg, run_dir = _model_recipe(model, train_steps)
    gen = load(run_dir, device) if train_steps == 0 and run_dir is not None else None
    _prepare_out(out)
    ctx = Context(out, int(seed), sizes, device, progress, log or (lambda msg: None), gen=gen)
    ctx.stage_bar("starting", total=5 + (train_steps > 0))
    t0 = time.perf_counter()
    shape = tuple(int(s) for s in cfg.preprocess.target_shape)
    stages.stage_cohort(ctx, max(shape), train_steps)
    if train_steps > 0:
        stages.stage_train(ctx, cfg, train_steps, run_dir)
    ctx.steps = min(sizes.steps, ctx.gen.diffusion.num_timesteps)
    for stage in (stages.stage_sample, stages.stage_anonymize, stages.stage_evaluate, stages.stage_perturb):
        stage(ctx)
    ctx.stage_bar("writing the page")
    if run_dir is not None and (run_dir / "MODEL_CARD.md").is_file() and train_steps == 0:
        write_text(out / "model_card.md", (run_dir / "MODEL_CARD.md").read_text(errors="replace"))
    total = time.perf_counter() - t0
    named = len(Path(model).parts) == 1 and not Path(model).is_dir()
    record = {"seed": ctx.seed,
              "model": f"fresh {cfg.preset} model" if train_steps > 0 else ctx.gen.run_dir.name,
              "model_source": f"trained here for {train_steps} steps" if train_steps > 0
              else ("shipped" if named else "run folder"),
              "model_arg": None if str(model) == DEFAULT_MODEL else (str(model) if named else "RUN"),
              "train_steps": train_steps, "sizes": dataclasses.asdict(sizes),
              "total_seconds": round(total, 2),
              "stages": [{"stage": s.key, "status": s.status, "seconds": round(s.seconds, 2),
                          "cpu_seconds": round(s.cpu_seconds, 2), "summary": s.summary,
                          "error": s.error} for s in ctx.stages.values()]}
    write_json(out / "demo.json", record)
    return write_page(ctx, record)
