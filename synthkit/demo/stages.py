"""The demo's stages (see :mod:`synthkit.demo.pipeline`); each records its outcome in
``ctx.stages`` and the pictures/numbers the page shows in the stage's ``info``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from synthkit.demo.state import Context, stage
from synthkit.errors import CohortError, UsageError

#: The demo shows subjects from this index on (``case_1000``, ...): never seen in training. The
#: shipped model was trained on subjects 0-63 and a model trained by the demo on 0..n-1.
HELD_OUT_FIRST = 1000
#: Key of a run's ``train_cohort.json`` that records a demo-cohort recipe instead of a path.
RECIPE_KEY = "demo_cohort"


def training_recipe(run_dir: Path | None) -> dict[str, int] | None:
    """The demo-cohort recipe (``n``, ``size``, ``seed``, ``first``) a run records as its
    training data in ``train_cohort.json`` (the shipped demo model does), or None."""
    if run_dir is None:
        return None
    try:
        side = json.loads((Path(run_dir) / "train_cohort.json").read_text())
        r = side[RECIPE_KEY]
        return {k: int(r[k]) for k in ("n", "size", "seed", "first")}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def stage_cohort(ctx: Context, size: int, train_steps: int = 0) -> None:
    """The held-out demo cohort (``cohort/``) and, when it has to be rebuilt, the model's
    training cohort (``training_cohort/``: the privacy reference, and the data of ``--train-steps``)."""
    from synthkit.demo.figures import case_png
    from synthkit.io.check import check_cohort
    from synthkit.io.demo_cohort import write_demo_cohort
    from synthkit.jobs.anonymize import recorded_train_cohort

    with stage(ctx, "cohort", "Demo cohort", fatal=True) as st:
        root = ctx.out / "cohort"
        cohort = write_demo_cohort(root, n=ctx.sizes.n_cases, size=size, seed=ctx.seed, progress=ctx.progress,
                                   first=HELD_OUT_FIRST)
        reports = check_cohort(cohort, progress=ctx.progress)
        ok = {r.id for r in reports if r.ok}
        if len(ok) < 4:
            raise CohortError(f"only {len(ok)} usable demo case(s); the demo needs 4", root)
        ctx.cohort = dataclasses.replace(cohort, cases=[c for c in cohort.cases if c.case_id in ok])
        shown = ctx.cohort.cases[: ctx.sizes.n_shown]
        st.info["pictures"] = [ctx.rel(case_png(c, c.case_id, ctx.out / "img" / f"real_{c.case_id}.png"))
                               for c in shown]
        st.info.update(n=len(cohort.cases), usable=len(ok), size=size, folder=ctx.rel(root))
        st.summary = (f"{len(cohort.cases)} held-out MNI152 cases at {size}^3, {len(ok)} usable (cohort check) "
                      f"-> {ctx.rel(root)}/")

        run_dir = ctx.gen.run_dir if ctx.gen is not None else None
        recorded = recorded_train_cohort(run_dir) if run_dir is not None else None
        recipe = training_recipe(run_dir)
        train_root = ctx.out / "training_cohort"
        if train_steps > 0:  # the demo trains its own model on subjects 0..n-1
            recipe = {"n": ctx.sizes.n_cases, "size": size, "seed": ctx.seed, "first": 0}
        elif recorded is not None:  # a recorded folder wins over a recipe
            ctx.train_cohort, recipe = recorded, None
        if recipe is not None:
            write_demo_cohort(train_root, n=recipe["n"], size=recipe["size"], seed=recipe["seed"],
                              first=recipe["first"], progress=ctx.progress)
            ctx.train_cohort = train_root
            st.summary += f"; the model's training cohort ({recipe['n']} cases) -> {ctx.rel(train_root)}/"


def stage_train(ctx: Context, cfg: Any, train_steps: int, source: Path | None = None) -> None:
    """A fresh model with ``cfg``'s recipe; a latent recipe trains a new denoiser in the
    autoencoder of ``source`` (the run the recipe came from)."""
    from synthkit.pipeline import load
    from synthkit.training import train

    with stage(ctx, "train", "Training", fatal=True) as st:
        t = dataclasses.replace(cfg.train, steps=train_steps, checkpoint_every=train_steps, preview_every=0,
                                seed=ctx.seed)
        if ctx.train_cohort is None:
            raise UsageError("no training cohort was built")
        if cfg.model_type == "latent":
            from synthkit.config import LATENT_AE_FOLDER
            from synthkit.training.autoencoder_latent import attach_autoencoder

            if source is None:
                raise UsageError("a latent recipe needs the run folder that holds its autoencoder")
            attach_autoencoder(ctx.out / "model", source / LATENT_AE_FOLDER)
        run = Path(train(ctx.train_cohort, ctx.out / "model", dataclasses.replace(cfg, train=t),
                         device=ctx.device, progress=ctx.progress, on_note=ctx.say))
        ctx.gen = load(run, ctx.device)
        st.info.update(steps=train_steps, preset=cfg.preset, folder=ctx.rel(run))
        st.summary = f"trained a fresh '{cfg.preset}' model for {train_steps} steps -> {ctx.rel(run)}/"


def stage_sample(ctx: Context) -> None:
    from synthkit.demo.figures import nifti_png
    from synthkit.jobs.sample import sample_masks

    with stage(ctx, "sample", "Sampling") as st:
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


def stage_anonymize(ctx: Context) -> None:
    from synthkit.jobs.anonymize import AnonymizeSettings, anonymize
    from synthkit.privacy.audit.check import CheckSettings
    from synthkit.runtime.memory import freed_memory_kept

    with stage(ctx, "anonymize", "Anonymized cohort") as st:
        out = ctx.out / "anonymized"
        edge = min(32, *ctx.gen.preprocess.target_shape)
        # AnonymizeSettings' default puts each tumour into a template head first (masks are patient-derived)
        settings = AnonymizeSettings(sampler="ddim", steps=ctx.steps, seed=ctx.seed,
                                     check=CheckSettings(shape=(edge,) * 3, seed=ctx.seed))
        # the first few held-out masks (DemoSizes.n_anonymized): a 128^3 volume of the shipped latent model
        # costs ~7.5 CPU-s to sample and decode and ~2.5 more to perturb its mask and check it, so all 16
        # would take minutes on 2 cores; the same pipeline on fewer masks keeps the stage under a minute
        n = min(ctx.sizes.n_anonymized, len(ctx.cohort.cases))
        step = ctx.task("anonymize", n)
        notes: list[str] = []  # the stage prints one line; the gate's notes go to its summary
        with freed_memory_kept():  # the same numbers without ~9 CPU-s of page faults at 128^3 (runtime/memory.py)
            res = anonymize(ctx.out / "cohort", ctx.gen.run_dir, out, settings=settings, train_cohort=ctx.train_cohort,
                            device=ctx.device, on_case=step, on_note=notes.append, limit=n)
        if not res.written and not res.dropped:
            raise CohortError(f"no case could be anonymized ({res.failed[0][1] if res.failed else 'no cases'})")
        manifest = json.loads((out / "manifest.json").read_text())
        cases = manifest.get("cases", [])
        regenerated = sum(len(c.get("attempts", [])) > 1 and c.get("status") == "ok" for c in cases)
        st.info["rule"] = _flag_rule(manifest, cases)
        st.info.update(cases=n, of=len(ctx.cohort.cases), written=len(res.written), dropped=len(res.dropped),
                       failed=len(res.failed),
                       regenerated=regenerated, folder=ctx.rel(out), report=ctx.rel(out / "privacy_report.html"),
                       reference=None if ctx.train_cohort is None else
                       f"the model's training cohort ({ctx.rel(ctx.train_cohort)}/)" if
                       ctx.train_cohort.resolve().is_relative_to(ctx.out.resolve()) else
                       "the model's recorded training cohort")
        whose = f"the first {n} of the {len(ctx.cohort.cases)}" if n < len(ctx.cohort.cases) else f"the {n}"
        st.summary = (f"{len(res.written)} de-identified synthetic volumes from {whose} held-out masks, {regenerated} "
                      f"regenerated and "
                      f"{len(res.dropped)} dropped by the privacy gate -> {ctx.rel(out)}/ "
                      f"(report: {ctx.rel(out / 'privacy_report.html')})")
        if res.failed:
            st.summary += f"; {len(res.failed)} case(s) failed"
        if any("from the cache" in n for n in notes):
            st.summary += "; training side of the check from the cache"
        elif any("shipped with the model" in n for n in notes):
            st.summary += "; training side of the check from the reference shipped with the model"


def _flag_rule(manifest: dict[str, Any], cases: list[dict[str, Any]]) -> str | None:
    """One sentence on the copy flag: threshold, reference spread, planted-copy sensitivity."""
    try:
        calib = manifest["privacy"]["calibration"]
        thr = calib["thresholds"]["similarity"]
        sims = [a["similarity"] for c in cases for a in c.get("attempts", []) if a.get("similarity") is not None]
        text = (f"A volume is flagged when its similarity to the closest training volume exceeds {thr['value']:.3f} "
                f"(training volumes to each other: median {thr['reference_median']:.3f}, max "
                f"{thr['reference_max']:.3f})")
        if sims:
            text += f"; the synthetic volumes here reach at most {max(sims):.3f}"
        planted = calib.get("planted_copies") or {}
        if planted.get("planted"):
            text += f". Sensitivity check: {planted['caught']} of {planted['planted']} planted near-copies flagged"
        return text + "."
    except (KeyError, TypeError, ValueError):
        return None


def stage_evaluate(ctx: Context) -> None:
    from synthkit.metrics import baselines, tables
    from synthkit.metrics import evaluate as ev
    from synthkit.metrics.fidelity import FidelityOptions
    from synthkit.metrics.report import write_report
    from synthkit.segmentation.multiclass import LabelSegConfig

    with stage(ctx, "evaluate", "Evaluation") as st:
        if ctx.stages["sample"].status != "ok":
            raise UsageError("nothing to evaluate: the sampling stage failed")
        real_dir, out = ctx.out / "cohort", ctx.out / "evaluation"
        controls = baselines.write_controls(real_dir, ctx.out / "baselines", seed=ctx.seed)
        ext = ev.make_extractor(None, 10, seed=ctx.seed, device=ctx.device)
        grid = ev.grid_of(real_dir)
        fid_opts = FidelityOptions(seg=LabelSegConfig(grid=min(64, *grid), steps=ctx.sizes.seg_steps, seed=ctx.seed))
        load = lambda p, name: ev.load_set(p, ext, grid, name=name, progress=ctx.progress, fidelity=fid_opts,
                                           seed=ctx.seed)
        real = load(real_dir, "real (held-out demo cases)")
        sets = [load(ctx.out / "synthetic", "Med-DDPM (this model)"),
                *(load(p, f"control: {name}") for name, p in controls.items())]
        result = ev.evaluate(real, sets, ext, seed=ctx.seed, n_boot=ctx.sizes.n_boot,
                             diversity_pairs=ctx.sizes.diversity_pairs, progress=ctx.progress, fidelity=fid_opts,
                             dataset_json={"labels": dict(ctx.cohort.labels)} if ctx.cohort is not None else None,
                             device=ctx.device if ctx.device != "auto" else "cpu")
        ev.save_json(result, out / "metrics.json")
        report = write_report(result, real, sets, out)
        st.info.update(result=result, header=list(tables.TABLE_HEADER), rows=tables.table_rows(result),
                       fidelity=(tables.fidelity_header(result), tables.fidelity_rows(result))
                       if result["real"].get("label_fidelity") else None,
                       tissue=(tables.tissue_header(), tables.tissue_rows(result)),
                       report=ctx.rel(report), json=ctx.rel(out / "metrics.json"))
        model = result["sets"][0]
        tum = next((e for n, e in (model.get("label_fidelity") or {}).items() if n != "head"), None)
        extra = ""
        if tum and tum.get("contrast") and tum.get("dice"):
            extra = (f"; label contrast {tum['contrast'].get('ratio_to_real') or 0:.2f}x real, "
                     f"Dice {tum['dice'].get('ratio_to_ceiling') or 0:.2f}x the real ceiling")
        st.summary = (f"3D-FID {model['fid']['value']:.3g}{extra}; {len(controls)} controls -> {ctx.rel(report)}"
                      if model.get("fid") else f"-> {ctx.rel(report)}")


def stage_perturb(ctx: Context) -> None:
    from synthkit.demo.figures import nifti_png
    from synthkit.io import discover_cohort
    from synthkit.jobs.augment import augment_cohort

    with stage(ctx, "perturb", "Perturbed masks") as st:
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
