"""``synthkit sample``: a set of masks -> a synthetic cohort, each volume on its mask's own grid.

:func:`sample_run` is the command: a model by name, on this rank's device, its sampler options
checked, then :func:`sample_masks`. That is the ``sample`` configuration of the synthesis engine
(:mod:`synthkit.pipeline.engine`): for
every mask (a folder of mask NIfTIs, or any cohort layout, discovered with
``need_images=False``) and every ``k < per_mask``, one volume is generated with seed
``seed_for(seed, case_id, k)``, no perturbation and no gate, and written in nnU-Net raw layout
(:class:`synthkit.io.nnunet.NnunetWriter`), so the output is itself a cohort that synthkit and
nnU-Net read::

    OUT/imagesTr/{case}_s{k}_0000.nii.gz   (one file per image channel: _0000, _0001, ...)
    OUT/labelsTr/{case}_s{k}.nii.gz        (the mask the image was made for: same grid)
    OUT/dataset.json                       (channel_names, labels, numTraining, file_ending)

Masks go through the run's recorded label rules first (:meth:`Pipeline.to_network_mask`: the
label mapping, by the cohort's label names when they match the run's, and the brain label from
the case's first image channel when the run adds one), so a raw BraTS cohort (labels 0/1/2/4)
needs no flags. The label files hold the mask the image was generated for, in the run's label
names with consecutive values (BraTS trained the paper's way: background 0, necrotic core 1,
edema 2, enhancing 3, brain 4), which nnU-Net v2 accepts; ``dataset.json`` names them.
    OUT/manifest.json                      (what was generated from what, with which seed)

Re-running with the same arguments gives bit-identical files, and a mask sampled alone gives
the same volume as within a larger set (seeds come from the case id, one generator per volume):
bit for bit at ``batch_size=1``, within 1e-4 of the intensity range at other batch sizes (the
batched network call rounds differently). Outputs already listed in the manifest with the same
model, sampler settings, seed, device type, precision and batch size (the manifest's
``settings``), and still present on disk, are skipped: an interrupted run resumes. Under other
settings every volume is made again (with a note), so a folder never mixes them. Under ``torchrun`` the work is split across ranks; each rank writes its own volumes
and rank 0 the manifest.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthkit.errors import UsageError
from synthkit.io.hashing import file_sha256
from synthkit.pipeline.pipeline import Pipeline
from synthkit.pipeline.seeds import seed_for

MANIFEST = "manifest.json"


def _settings(gen: Pipeline, sampler: str, steps: int | None, eta: float, seed: int,
              background: bool | None, label_space: str, batch_size: int | None, guidance: float = 1.0) -> dict[str, Any]:
    from synthkit.pipeline.engine import runtime_settings

    return {"weights_sha256": gen.weights_sha256, "sampler": sampler,
            "steps": steps if steps is not None else gen.diffusion.num_timesteps,
            "eta": float(eta), "seed": int(seed), "background": background, "label_space": label_space,
            # recorded when used, so manifests made without guidance read as before
            **({"guidance": float(guidance)} if guidance != 1.0 else {}),
            **runtime_settings(gen, batch_size)}


def _other_settings(note: Callable[[str], None], settings: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    """Say that the volumes already in the folder were made otherwise and will be made again."""
    def other(old: dict[str, Any]) -> None:
        before = old.get("settings") if isinstance(old.get("settings"), dict) else {}
        changed = [f"{k} {before.get(k)} -> {v}" for k, v in settings.items() if before.get(k) != v]
        note(f"the output folder was generated with other settings ({', '.join(changed[:3]) or 'unreadable'}); "
             "generating every volume again")

    return other


def sample_masks(gen: Pipeline, masks: Any, out_dir: str | Path, *, per_mask: int = 1, sampler: str = "ddpm",
                 steps: int | None = None, eta: float = 0.0, seed: int = 0, batch_size: int | None = None,
                 background: bool | None = None, label_space: str = "auto", strict: bool = False,
                 progress: Any = None, guidance: float = 1.0,
                 dist: Any = None, on_note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Generate ``per_mask`` volumes for every mask in ``masks`` into ``out_dir``; returns the manifest.

    ``masks``: a folder (mask folder or cohort) or a discovered ``Cohort``. ``batch_size``:
    volumes per network call (default: 1 on the CPU, 4 on CUDA; see the module docstring).
    ``background``: None = on for masks holding a head/brain label (see
    :meth:`Pipeline.prepare`). ``label_space``: ``"auto"``, ``"raw"`` or ``"network"`` (see
    :meth:`Pipeline.to_network_mask`). ``guidance``: classifier-free guidance weight (see
    :meth:`Pipeline.sample`). A mask that cannot be used is reported in the manifest's
    ``skipped`` list (or raised with ``strict``). ``progress``: a rich ``Progress`` or a
    callable ``(done, total)`` in volumes, called after every network step.
    """
    from synthkit.io import discover_cohort
    from synthkit.io.nnunet import NnunetWriter
    from synthkit.pipeline.engine import Engine, Job, Sampling, as_progress
    from synthkit.pipeline.manifest import ManifestStore

    if per_mask < 1 or (batch_size is not None and batch_size < 1):
        raise UsageError("--per-mask and --batch-size must be at least 1")
    note = on_note or (lambda msg: None)
    out = Path(out_dir)
    cohort = masks if hasattr(masks, "cases") else discover_cohort(masks, need_images=False)
    settings = _settings(gen, sampler, steps, eta, seed, background, label_space, batch_size, guidance)

    def document(items: list[dict[str, Any]], skipped: list[dict[str, Any]]) -> dict[str, Any]:
        return {"generator": "synthkit", "run": gen.run_dir.name, "settings": settings,
                "per_mask": per_mask, "items": items, "skipped": skipped}

    store = ManifestStore(out / MANIFEST, {"settings": settings}, key=lambda e: (e["case"], int(e["k"])),
                          files=lambda e: [*e["images"], e["label"]], document=document, dist=dist,
                          on_other=_other_settings(note, settings))
    names = tuple(gen.config.data.channel_names)
    writer = NnunetWriter(out, names if len(names) == gen.image_channels else None, gen.network_labels(),
                          existing="keep")
    jobs = [Job((case.case_id, k), case, k, i) for i, case in enumerate(cohort.cases) for k in range(per_mask)]
    engine = Engine(gen, Sampling(sampler, steps, eta, background, label_space, guidance),
                    seed=lambda job, attempt: seed_for(seed, job.case.case_id, job.k), labels=dict(cohort.labels),
                    batch_size=batch_size, dist=store.dist, progress=as_progress(progress, "sample"))
    n_done = sum(store.done(j.key) for j in jobs[store.dist.rank :: store.dist.world_size])
    if n_done and store.dist.is_main:
        note(f"{n_done} volume(s) already generated with these settings; skipping them")

    def write(made: Any) -> dict[str, Any]:
        job = made.job
        files = writer.write_case(f"{job.case.case_id}_s{job.k}", made.image, made.mask)
        return {"case": job.case.case_id, "mask_index": job.index, "k": job.k, "seed": made.seed,
                "background": bool(made.background), "images": files[:-1], "label": files[-1],
                "sha256": file_sha256(out / files[0])}

    def fail(job: Any, err: BaseException) -> None:
        if strict:
            raise err
        store.fail({"case": job.case.case_id, "reason": str(err)})

    engine.run(jobs, write, store=store, on_fail=fail)
    return store.finish(then=lambda doc: writer.finish(
        len(doc["items"]), name="synthkit synthetic cohort",
        description="Generated by synthkit (Med-DDPM); see manifest.json"))


def sample_run(model: str | Path, masks: Any, out_dir: str | Path, *, device: str = "cpu",
               precision: str | None = None, sampler: str | None = None, steps: int | None = None,
               eta: float = 0.0, on_note: Callable[[str], None] | None = None, **options: Any) -> dict[str, Any]:
    """``synthkit sample``: join the ``torchrun`` process group when there is one, load ``model``
    (a run folder or shipped model name) on this rank's device in ``precision``, check the sampler
    options for its kind (``sampler`` None: the kind's default) and :func:`sample_masks` with
    ``options``. Notes (``on_note``) come from rank 0 only, the precision actually used among them.
    Returns the manifest (``{}`` on the other ranks)."""
    from synthkit.pipeline import load
    from synthkit.runtime.ddp import cleanup, init_distributed

    dist = init_distributed(device)

    def note(msg: str) -> None:
        if dist.is_main and on_note is not None:
            on_note(msg)

    try:
        gen = load(model, dist.device, precision=precision)
        sampler, steps = gen.check_sampling(sampler, steps, eta)  # GAN runs: one pass, recorded as such
        used = gen.precision or "fp32"
        if precision not in (None, used):
            note(f"--precision {precision} is not natively supported on {gen.device}; sampling in {used}")
        if options.get("guidance", 1.0) != 1.0 and not getattr(gen.config.train, "cond_drop", 0.0):
            note("this run was trained without --cond-drop: --guidance extrapolates from an unconditional "
                 "output it never learned")
        return sample_masks(gen, masks, out_dir, sampler=sampler, steps=steps, eta=eta, dist=dist, on_note=note,
                            **options)
    finally:
        cleanup(dist)
