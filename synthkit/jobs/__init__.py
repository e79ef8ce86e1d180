"""The jobs behind the commands that make volumes: each a short configuration of the one
synthesis engine (:class:`synthkit.pipeline.engine.Engine`) and a writer.

* :mod:`~synthkit.jobs.sample` (``synthkit sample``): every mask as it is, one seed rule, no
  gate; an nnU-Net raw cohort with ``manifest.json``, resumable;
* :mod:`~synthkit.jobs.augment` (``synthkit augment``): perturbed masks (or classic copies,
  :mod:`synthkit.augment`), an nnU-Net dataset with ``augment.json``;
* :mod:`~synthkit.jobs.anonymize` (``synthkit anonymize``): perturbed masks, every volume through
  the privacy gate (:mod:`synthkit.privacy.gate`), de-identified outputs with a report.

A job chooses the work list, the mask step, the seed rule, the gate and the writer; the engine
does the rest. The CLI parses options and calls a job; a job calls :mod:`synthkit.pipeline`,
which calls :mod:`synthkit.diffusion`. Imported lazily (``import synthkit.jobs`` does not import
torch).
"""

from __future__ import annotations

from synthkit._lazy import lazy_dir, lazy_getattr

_API: dict[str, str] = {
    "sample_masks": "synthkit.jobs.sample",
    "sample_run": "synthkit.jobs.sample",
    "augment_cohort": "synthkit.jobs.augment",
    "AugmentReport": "synthkit.jobs.augment",
    "anonymize": "synthkit.jobs.anonymize",
    "AnonymizeSettings": "synthkit.jobs.anonymize",
}

__all__ = [*sorted(_API)]  # noqa: PLE0604 (the lazy names are the keys of _API)

__getattr__ = lazy_getattr(__name__, _API)

__dir__ = lazy_dir(__all__)
