"""Sampling pipeline: a set of masks -> a synthetic cohort, each volume on its mask's own grid.

For every mask (a folder of mask NIfTIs, or any cohort layout, discovered with
``need_images=False``) and every ``k < per_mask``, one volume is generated with seed
``seed_for(seed, case_id, k)`` and written in nnU-Net raw layout, so the output is itself a
cohort that synthkit and nnU-Net read::

    OUT/imagesTr/{case}_s{k}_0000.nii.gz   (one file per image channel: _0000, _0001, ...)
    OUT/labelsTr/{case}_s{k}.nii.gz        (a clean copy of the mask: same grid, same labels)
    OUT/dataset.json                       (channel_names, labels, numTraining, file_ending)
    OUT/manifest.json                      (what was generated from what, with which seed)

Re-running with the same arguments gives bit-identical files, and a mask sampled alone gives
the same volume as within a larger set (seeds come from the case id, one generator per
volume). Outputs already listed in the manifest with the same model, sampler settings and
seed, and still present on disk, are skipped: an interrupted run resumes. Under ``torchrun``
the work is split across ranks; each rank writes its own volumes and rank 0 the manifest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from synthkit.errors import CohortError, UsageError
from synthkit.io.atomic import write_json
from synthkit.run import Generator, file_sha256, seed_for

MANIFEST = "manifest.json"


def _settings(gen: Generator, sampler: str, steps: int | None, eta: float, seed: int,
              background: bool | None, label_space: str) -> dict[str, Any]:
    return {"weights_sha256": gen.weights_sha256, "sampler": sampler,
            "steps": steps if steps is not None else gen.diffusion.num_timesteps,
            "eta": float(eta), "seed": int(seed), "background": background, "label_space": label_space}


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _names(case_id: str, k: int, channels: int) -> tuple[list[str], str]:
    base = f"{case_id}_s{k}"
    return [f"imagesTr/{base}_{c:04d}.nii.gz" for c in range(channels)], f"labelsTr/{base}.nii.gz"


def sample_masks(gen: Generator, masks: Any, out_dir: str | Path, *, per_mask: int = 1, sampler: str = "ddpm",
                 steps: int | None = None, eta: float = 0.0, seed: int = 0, batch_size: int = 1,
                 background: bool | None = None, label_space: str = "raw", strict: bool = False,
                 progress: Any = None,
                 dist: Any = None, on_note: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Generate ``per_mask`` volumes for every mask in ``masks`` into ``out_dir``; returns the manifest.

    ``masks``: a folder (mask folder or cohort) or a discovered ``Cohort``. ``batch_size``:
    masks preprocessed and sampled per round (memory); results never depend on it.
    ``background``: None = on for masks holding a head/brain label (see
    :meth:`Generator.prepare`). ``label_space``: ``"raw"`` or ``"network"`` (see
    :meth:`Generator.prepare`). A mask that cannot be used is reported in the manifest's
    ``skipped`` list (or raised with ``strict``).
    """
    from synthkit.io import discover_cohort, read_mask, write_nifti, write_nnunet_dataset_json
    from synthkit.training.ddp import DistInfo, barrier

    if per_mask < 1 or batch_size < 1:
        raise UsageError("--per-mask and --batch-size must be at least 1")
    note = on_note or (lambda msg: None)
    dist = dist or DistInfo()
    out = Path(out_dir)
    cohort = masks if hasattr(masks, "cases") else discover_cohort(masks, need_images=False)
    channels = gen.image_channels
    settings = _settings(gen, sampler, steps, eta, seed, background, label_space)

    # what is already done (a previous, possibly interrupted, run with the same settings)
    done: dict[tuple[str, int], dict[str, Any]] = {}
    old = _read_manifest(out / MANIFEST)
    parts = sorted(out.glob(".manifest.rank*.json"))
    for src in [old] + [_read_manifest(p) for p in parts]:
        if src.get("settings") == settings:
            for e in src.get("items", []):
                files = [out / f for f in e.get("images", [])] + [out / e.get("label", "")]
                if all(f.is_file() for f in files):
                    done[(e["case"], int(e["k"]))] = e

    work = [(i, case, k) for i, case in enumerate(cohort.cases) for k in range(per_mask)]
    mine = work[dist.rank :: dist.world_size]
    entries: list[dict[str, Any]] = [e for key, e in done.items()]
    skipped: list[dict[str, str]] = []
    todo = [w for w in mine if (w[1].case_id, w[2]) not in done]
    part_path = out / f".manifest.rank{dist.rank}.json"
    task = progress.add_task("sample", total=len(mine), completed=len(mine) - len(todo)) \
        if progress is not None and hasattr(progress, "add_task") else None
    if len(todo) < len(mine) and dist.is_main:
        note(f"{len(mine) - len(todo)} volume(s) already generated with these settings; skipping them")

    for start in range(0, len(todo), batch_size):
        batch = todo[start : start + batch_size]
        for index, case, k in batch:
            try:
                mask = read_mask(case)
                cond, record, has_head = gen.prepare(mask, label_space)
            except (CohortError, UsageError) as e:
                if strict:
                    raise
                skipped.append({"case": case.case_id, "reason": str(e)})
                if task is not None:
                    progress.advance(task)
                continue
            s = seed_for(seed, case.case_id, k)
            use_bg = has_head if background is None else background
            x = gen.sample_network(cond[None], [s], sampler=sampler, steps=steps, eta=eta, background=[use_bg])
            vol = gen.to_volume(x[0], record)
            images, label = _names(case.case_id, k, channels)
            for c, name in enumerate(images):
                write_nifti(out / name, vol.data[c], vol.affine)
            write_nifti(out / label, mask.data, mask.affine, is_label=True)
            entries.append({"case": case.case_id, "mask_index": index, "k": k, "seed": s,
                            "background": bool(use_bg), "images": images, "label": label,
                            "sha256": file_sha256(out / images[0])})
            write_json(part_path, {"settings": settings, "items": entries, "skipped": skipped})  # resumable
            if task is not None:
                progress.advance(task)

    if dist.distributed:
        write_json(part_path, {"settings": settings, "items": entries, "skipped": skipped})
    barrier(dist)
    manifest: dict[str, Any] = {}
    if dist.is_main:
        items: dict[tuple[str, int], dict[str, Any]] = {(e["case"], int(e["k"])): e for e in entries}
        for p in sorted(out.glob(".manifest.rank*.json")):
            data = _read_manifest(p)
            if data.get("settings") == settings:
                items.update({(e["case"], int(e["k"])): e for e in data.get("items", [])})
                if p != part_path:
                    skipped += [x for x in data.get("skipped", []) if x not in skipped]
        ordered = [items[key] for key in sorted(items, key=lambda kk: (kk[0], kk[1]))]
        labels = dict(cohort.labels) or dict(gen.config.data.labels)
        if "background" not in labels:
            labels = {"background": 0, **labels}
        write_nnunet_dataset_json(out, tuple(gen.config.data.channel_names), labels, len(ordered),
                                  name="synthkit synthetic cohort",
                                  description="Generated by synthkit (Med-DDPM); see manifest.json")
        manifest = {"generator": "synthkit", "run": gen.run_dir.name, "settings": settings,
                    "per_mask": per_mask, "items": ordered, "skipped": skipped}
        write_json(out / MANIFEST, manifest)
        for p in out.glob(".manifest.rank*.json"):
            p.unlink(missing_ok=True)
    barrier(dist)
    return manifest
