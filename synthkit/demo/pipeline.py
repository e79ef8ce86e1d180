"""The stages of ``synthkit demo`` and :func:`run_demo`, which runs them and writes the page.

Stages (each prints one line: what it did, where, how long):

1. ``cohort``: the MNI152 demo cohort at the model's grid size, checked (fatal on failure);
2. ``train`` (only with ``train_steps > 0``): a fresh model with the recipe of ``model``
   (its ``config.json``; the ``small`` preset at 32^3 when no model is installed), trained
   for ``train_steps`` steps on the demo cohort and used instead (fatal on failure);
3. ``sample``: one synthetic volume per mask (DDIM, background held) plus several samples for
   one mask;
4. ``anonymize``: the de-identified synthetic cohort through the privacy gate, with its
   privacy report;
5. ``evaluate``: real vs synthetic vs two trivial baselines (blurred real, noise in mask),
   with the evaluation report;
6. ``perturb``: a few perturbed masks and their generated images (``synthkit.augment``);
7. the page ``OUT/index.html`` (:mod:`synthkit.demo.page`).

A failing stage among 3-6 is reported in one line and marked failed on the page; the others go
on. Everything random derives from ``seed``: same seed, same files.

Output folder ``OUT``::

    index.html  demo.json  img/*.png  model_card.md
    cohort/ (real demo cohort)   synthetic/  diversity/ (sample_masks outputs)
    anonymized/ (privacy_report.html)   baselines/{blurred,noise}/
    evaluation/ (index.html, metrics.json)   perturbed/ (augment.json)   [model/ (trained run)]
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthkit.errors import CheckpointError, CohortError, SynthkitError, UsageError

DEFAULT_MODEL = "demo"
MARKER = ".synthkit-demo"
#: Sub-folders the demo writes (removed before a rerun into the same folder).
OWNED = ("img", "cohort", "model", "synthetic", "diversity", "anonymized", "baselines", "evaluation", "perturbed")


@dataclass(frozen=True)
class DemoSizes:
    """How much work each stage does. The defaults take a few minutes on 2 CPU cores with the
    ``small`` model at 32^3; :data:`QUICK` is smaller still."""

    n_cases: int = 16  # demo cohort size = synthetic volumes in 'sample' and 'anonymize'
    steps: int = 30  # DDIM steps (capped at the model's T)
    n_diversity: int = 5  # samples for one mask
    n_shown: int = 4  # real/synthetic pairs on the page
    n_perturbed: int = 4  # perturbed masks with their generated images
    perturb_ops: str = "move+deform"
    n_boot: int = 100  # bootstrap replicates of FID/MMD
    diversity_pairs: int = 30  # random pairs for the within-set MS-SSIM

    def __post_init__(self) -> None:
        if self.n_cases < 4:
            raise UsageError("the demo needs at least 4 cases (FID, privacy calibration)")
        if min(self.steps, self.n_diversity, self.n_shown, self.n_perturbed, self.n_boot, self.diversity_pairs) < 1:
            raise UsageError("demo stage sizes must be at least 1")


QUICK = DemoSizes(n_cases=6, steps=10, n_diversity=3, n_shown=3, n_perturbed=2, n_boot=20, diversity_pairs=10)


@dataclass
class Stage:
    """One stage's outcome; ``info`` holds what the page shows (paths relative to OUT)."""

    key: str
    title: str
    status: str = "pending"  # ok | failed | skipped
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time (all threads): wall time is meaningless on a busy machine
    summary: str = ""
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    out: Path
    seed: int
    sizes: DemoSizes
    device: str
    progress: Any
    say: Callable[[str], None]
    cohort: Any = None
    gen: Any = None
    steps: int = 0
    stages: dict[str, Stage] = field(default_factory=dict)

    def rel(self, p: Path) -> str:
        return Path(os.path.relpath(p, self.out)).as_posix()

    def task(self, name: str, total: int) -> Callable[[], None]:
        if self.progress is None or not hasattr(self.progress, "add_task"):
            return lambda: None
        t = self.progress.add_task(name, total=total)
        return lambda: self.progress.advance(t)


# ----------------------------------------------------------------------------- model


def _model_recipe(model: str | Path, train_steps: int) -> tuple[Any, Path | None]:
    """(RunConfig, run folder or None) of ``model``; a fresh-training recipe when the default
    model is not installed and ``train_steps > 0``."""
    from synthkit.config import ConfigError, DiffusionConfig, RunConfig, TrainConfig, model_config
    from synthkit.run import resolve_run

    try:
        run_dir = resolve_run(model)
    except CheckpointError:
        if str(model) != DEFAULT_MODEL:
            raise
        if train_steps > 0:
            return RunConfig(model=model_config("small"), diffusion=DiffusionConfig(prediction="v"),
                             train=TrainConfig(lr=1e-3, lr_final=1e-4, batch_size=2), preset="small"), None
        raise CheckpointError("the shipped demo model is not installed (synthkit/assets/models/demo); "
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


@contextmanager
def _stage(ctx: Context, key: str, title: str, *, fatal: bool = False) -> Iterator[Stage]:
    st = ctx.stages[key] = Stage(key, title)
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield st
        st.status = "ok"
    except Exception as e:
        st.status, st.error = "failed", str(e).replace("\n", " ") or type(e).__name__
        if not isinstance(e, SynthkitError):
            st.error = f"{type(e).__name__}: {st.error}"
        if fatal or os.environ.get("SYNTHKIT_DEBUG") or isinstance(e, (MemoryError, KeyboardInterrupt)):
            raise
    finally:
        st.seconds, st.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        n = len(ctx.stages)
        if st.status == "ok":
            ctx.say(f"[{n}] {key}: {st.summary} ({st.seconds:.1f} s)")
        else:
            ctx.say(f"[{n}] {key}: FAILED: {st.error} ({st.seconds:.1f} s)")


# ----------------------------------------------------------------------------- stages


def _cohort(ctx: Context, size: int) -> None:
    from synthkit.demo.figures import case_png
    from synthkit.io.check import check_cohort
    from synthkit.io.demo_cohort import write_demo_cohort

    with _stage(ctx, "cohort", "Demo cohort", fatal=True) as st:
        root = ctx.out / "cohort"
        cohort = write_demo_cohort(root, n=ctx.sizes.n_cases, size=size, seed=ctx.seed, progress=ctx.progress)
        reports = check_cohort(cohort, progress=ctx.progress)
        ok = {r.id for r in reports if r.ok}
        if len(ok) < 4:
            raise CohortError(f"only {len(ok)} usable demo case(s); the demo needs 4", root)
        ctx.cohort = dataclasses.replace(cohort, cases=[c for c in cohort.cases if c.case_id in ok])
        shown = ctx.cohort.cases[: ctx.sizes.n_shown]
        st.info["pictures"] = [ctx.rel(case_png(c, c.case_id, ctx.out / "img" / f"real_{c.case_id}.png"))
                               for c in shown]
        st.info.update(n=len(cohort.cases), usable=len(ok), size=size, folder=ctx.rel(root))
        st.summary = (f"{len(cohort.cases)} MNI152 cases at {size}^3, {len(ok)} usable (cohort check) "
                      f"-> {ctx.rel(root)}/")


def _train(ctx: Context, cfg: Any, train_steps: int) -> None:
    from synthkit.run import load
    from synthkit.training import train

    with _stage(ctx, "train", "Training", fatal=True) as st:
        t = dataclasses.replace(cfg.train, steps=train_steps, checkpoint_every=train_steps, preview_every=0,
                                seed=ctx.seed)
        run = Path(train(ctx.out / "cohort", ctx.out / "model", dataclasses.replace(cfg, train=t),
                         device=ctx.device, progress=ctx.progress, on_note=ctx.say))
        ctx.gen = load(run, ctx.device)
        st.info.update(steps=train_steps, preset=cfg.preset, folder=ctx.rel(run))
        st.summary = f"trained a fresh '{cfg.preset}' model for {train_steps} steps -> {ctx.rel(run)}/"


def _sample(ctx: Context) -> None:
    from synthkit.demo.figures import nifti_png
    from synthkit.generate import sample_masks

    with _stage(ctx, "sample", "Sampling") as st:
        kw = {"sampler": "ddim", "steps": ctx.steps, "seed": ctx.seed, "background": True, "progress": ctx.progress}
        out = ctx.out / "synthetic"
        man = sample_masks(ctx.gen, ctx.cohort, out, per_mask=1, **kw)
        if len(man["items"]) < 2:
            raise CohortError(f"only {len(man['items'])} volume(s) could be generated", out)
        by_case = {e["case"]: e for e in man["items"]}
        pairs = []
        for case in ctx.cohort.cases[: ctx.sizes.n_shown]:
            e = by_case.get(case.case_id)
            if e is not None:
                png = nifti_png(out / e["images"][0], out / e["label"], f"synthetic ({case.case_id} mask)",
                                ctx.out / "img" / f"synth_{case.case_id}.png")
                pairs.append({"case": case.case_id, "real": f"img/real_{case.case_id}.png", "synthetic": ctx.rel(png)})
        case = ctx.cohort.cases[0]
        one = dataclasses.replace(ctx.cohort, cases=[case])
        div_dir = ctx.out / "diversity"
        div = sample_masks(ctx.gen, one, div_dir, per_mask=ctx.sizes.n_diversity, **kw)
        samples = [ctx.rel(nifti_png(div_dir / e["images"][0], div_dir / e["label"], f"sample {e['k'] + 1}",
                                     ctx.out / "img" / f"diversity_{e['k']}.png")) for e in div["items"]]
        st.info.update(n=len(man["items"]), skipped=len(man.get("skipped", [])), pairs=pairs, folder=ctx.rel(out),
                       diversity_case=case.case_id, diversity=samples, steps=ctx.steps,
                       diversity_real=f"img/real_{case.case_id}.png")
        st.summary = (f"{len(man['items'])} synthetic volumes (DDIM {ctx.steps} steps, background held) "
                      f"-> {ctx.rel(out)}/; {len(samples)} samples for {case.case_id} -> {ctx.rel(div_dir)}/")


def _anonymize(ctx: Context) -> None:
    from synthkit.privacy.anonymize import AnonymizeSettings, anonymize, recorded_train_cohort
    from synthkit.privacy.check import CheckSettings

    with _stage(ctx, "anonymize", "Anonymized cohort") as st:
        out = ctx.out / "anonymized"
        recorded = recorded_train_cohort(ctx.gen.run_dir)
        reference = recorded or ctx.out / "cohort"
        edge = min(32, *ctx.gen.preprocess.target_shape)
        settings = AnonymizeSettings(sampler="ddim", steps=ctx.steps, seed=ctx.seed,
                                     check=CheckSettings(shape=(edge,) * 3, seed=ctx.seed))
        step = ctx.task("anonymize", len(ctx.cohort.cases))
        res = anonymize(ctx.out / "cohort", ctx.gen.run_dir, out, settings=settings, train_cohort=reference,
                        device=ctx.device, on_case=step, on_note=ctx.say)
        if not res.written and not res.dropped:
            raise CohortError(f"no case could be anonymized ({res.failed[0][1] if res.failed else 'no cases'})")
        import json

        cases = json.loads((out / "manifest.json").read_text()).get("cases", [])
        regenerated = sum(len(c.get("attempts", [])) > 1 and c.get("status") == "ok" for c in cases)
        st.info.update(written=len(res.written), dropped=len(res.dropped), failed=len(res.failed),
                       regenerated=regenerated, folder=ctx.rel(out), report=ctx.rel(out / "privacy_report.html"),
                       reference="the model's recorded training cohort" if recorded is not None else
                       "this demo cohort (the model's training cohort is not on this machine; the shipped "
                       "model was trained on demo cohort cases made by the same generator)")
        st.summary = (f"{len(res.written)} de-identified synthetic volumes, {regenerated} regenerated and "
                      f"{len(res.dropped)} dropped by the privacy gate -> {ctx.rel(out)}/ "
                      f"(report: {ctx.rel(out / 'privacy_report.html')})")
        if res.failed:
            st.summary += f"; {len(res.failed)} case(s) failed"


def _evaluate(ctx: Context) -> None:
    from synthkit.metrics import baselines
    from synthkit.metrics import evaluate as ev
    from synthkit.metrics.report import write_report

    with _stage(ctx, "evaluate", "Evaluation") as st:
        if ctx.stages["sample"].status != "ok":
            raise UsageError("nothing to evaluate: the sampling stage failed")
        real_dir, out = ctx.out / "cohort", ctx.out / "evaluation"
        blur = baselines.blurred(real_dir, ctx.out / "baselines" / "blurred")
        noise = baselines.noise_in_mask(real_dir, ctx.out / "baselines" / "noise", seed=ctx.seed)
        ext = ev.make_extractor(None, 10, seed=ctx.seed, device=ctx.device)
        grid = ev.grid_of(real_dir)
        load = lambda p, name: ev.load_set(p, ext, grid, name=name, progress=ctx.progress)
        real = load(real_dir, "real (demo cohort)")
        sets = [load(ctx.out / "synthetic", "Med-DDPM (this model)"), load(blur, "baseline: blurred real"),
                load(noise, "baseline: noise in mask")]
        result = ev.evaluate(real, sets, ext, seed=ctx.seed, n_boot=ctx.sizes.n_boot,
                             diversity_pairs=ctx.sizes.diversity_pairs, progress=ctx.progress)
        ev.save_json(result, out / "metrics.json")
        report = write_report(result, real, sets, out)
        st.info.update(result=result, header=list(ev.TABLE_HEADER), rows=ev.table_rows(result),
                       report=ctx.rel(report), json=ctx.rel(out / "metrics.json"))
        fids = [f"{r['name'].split(' (')[0]} {r['fid']['value']:.3g}" for r in result["sets"] if r.get("fid")]
        st.summary = f"3D-FID {', '.join(fids)} -> {ctx.rel(report)}"


def _perturb(ctx: Context) -> None:
    import json

    from synthkit.augment import augment_cohort
    from synthkit.demo.figures import nifti_png
    from synthkit.io import discover_cohort

    with _stage(ctx, "perturb", "Perturbed masks") as st:
        out = ctx.out / "perturbed"
        rep = augment_cohort(ctx.out / "cohort", out, n=ctx.sizes.n_perturbed, model=ctx.gen,
                             ops=ctx.sizes.perturb_ops, sampler="ddim", steps=ctx.steps, seed=ctx.seed,
                             overwrite=True, progress=ctx.progress)
        manifest = json.loads((out / "augment.json").read_text())
        # the augment pipeline numbers its sources among the usable cases of the cohort as it reads it
        sources = [c for c in discover_cohort(ctx.out / "cohort", need_images=False).cases
                   if c.mask is not None and not c.problems]
        items = []
        for rec in manifest.get("cases", []):
            cid, src = rec["case"], sources[rec["source"]]
            img = out / "imagesTr" / f"{cid}_0000.nii.gz"
            png = nifti_png(img, out / "labelsTr" / f"{cid}.nii.gz", f"{cid}: perturbed mask",
                            ctx.out / "img" / f"perturbed_{cid}.png")
            real = ctx.out / "img" / f"real_{src.case_id}.png"
            if not real.is_file():
                from synthkit.demo.figures import case_png

                case_png(src, src.case_id, real)
            ops = ", ".join(o.get("op", "?") for o in rec.get("ops", []))
            items.append({"case": cid, "source": src.case_id, "ops": ops, "real": ctx.rel(real),
                          "synthetic": ctx.rel(png)})
        st.info.update(items=items, folder=ctx.rel(out), ops=ctx.sizes.perturb_ops, failures=rep.failures)
        st.summary = (f"{len(items)} masks perturbed ({ctx.sizes.perturb_ops}) and their images generated "
                      f"-> {ctx.rel(out)}/")


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
    from synthkit.demo.page import write_page
    from synthkit.io.atomic import write_json, write_text
    from synthkit.run import load

    if train_steps < 0:
        raise UsageError(f"--train-steps must be >= 0, got {train_steps}")
    if device not in ("cpu", "cuda"):
        raise UsageError(f"device must be cpu or cuda, not {device!r}")
    sizes = sizes or DemoSizes()
    out = Path(out)
    cfg, run_dir = _model_recipe(model, train_steps)
    gen = load(run_dir, device) if train_steps == 0 and run_dir is not None else None
    _prepare_out(out)
    ctx = Context(out, int(seed), sizes, device, progress, log or (lambda msg: None), gen=gen)
    t0 = time.perf_counter()
    shape = tuple(int(s) for s in cfg.preprocess.target_shape)
    _cohort(ctx, max(shape))
    if train_steps > 0:
        _train(ctx, cfg, train_steps)
    ctx.steps = min(sizes.steps, ctx.gen.diffusion.num_timesteps)
    for stage in (_sample, _anonymize, _evaluate, _perturb):
        stage(ctx)
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
