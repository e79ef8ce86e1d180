"""Inference: load a run by its model kind, turn masks into volumes, and the one synthesis engine.

* :func:`load` (:mod:`~synthkit.pipeline.loading`): a run folder or shipped model name -> the
  :class:`Pipeline` of its kind (:mod:`~synthkit.pipeline.registry`: ``register_kind``);
* :class:`Pipeline` (:mod:`~synthkit.pipeline.pipeline`): ``prepare(mask)`` -> ``sample_batch``
  (one batched network call per step) -> ``to_volume`` on each mask's own grid;
* :class:`Engine` (:mod:`~synthkit.pipeline.engine`): the work list (cases x k), optional mask
  perturbation and privacy gate, the seed rule, batches, DDP sharding, resume from the manifest
  (:mod:`~synthkit.pipeline.manifest`) and progress; ``synthkit sample``, ``augment``,
  ``anonymize`` and ``demo`` are configurations of it;
* :func:`seed_for` / :func:`copy_seed` (:mod:`~synthkit.pipeline.seeds`): the seed rules.

Imported lazily (``import synthkit.pipeline`` does not import torch).
"""

from __future__ import annotations

from synthkit._lazy import lazy_dir, lazy_getattr

_API: dict[str, str] = {
    "load": "synthkit.pipeline.loading",
    "resolve_run": "synthkit.pipeline.loading",
    "Pipeline": "synthkit.pipeline.pipeline",
    "Prepared": "synthkit.pipeline.pipeline",
    "DiffusionPipeline": "synthkit.pipeline.diffusion",
    "GanPipeline": "synthkit.pipeline.gan",
    "LatentPipeline": "synthkit.pipeline.latent",
    "register_kind": "synthkit.pipeline.registry",
    "kind_class": "synthkit.pipeline.registry",
    "known_kinds": "synthkit.pipeline.registry",
    "seed_for": "synthkit.pipeline.seeds",
    "copy_seed": "synthkit.pipeline.seeds",
    "Engine": "synthkit.pipeline.engine",
    "Job": "synthkit.pipeline.engine",
    "Made": "synthkit.pipeline.engine",
    "Sampling": "synthkit.pipeline.engine",
    "default_batch_size": "synthkit.pipeline.engine",
    "ManifestStore": "synthkit.pipeline.manifest",
}

__all__ = [*sorted(_API)]  # noqa: PLE0604 (the lazy names are the keys of _API)

__getattr__ = lazy_getattr(__name__, _API)

__dir__ = lazy_dir(__all__)
