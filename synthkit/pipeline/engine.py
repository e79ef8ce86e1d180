"""The synthesis engine: a work list of masks in, synthetic volumes out, in batches.

``synthkit sample``, ``augment``, ``anonymize`` and the demo are configurations of one
:class:`Engine`; they differ only in the callables they hand it and in what they write::

    jobs (cases x k) --shard (DDP)--> skip done (ManifestStore) --> mask step (read, to the
        network's labels, perturb) --> Pipeline.prepare --> batches of B --> Pipeline.sample_batch (one network call per step)
        --> to_volume --> gate (accept / regenerate with the next seed / drop) --> write --> manifest

* **Jobs**: one :class:`Job` per volume to make; ``key`` is its manifest key.
* **Mask step**: ``read(job)`` (default: :func:`synthkit.io.read_mask` of ``job.case``); then
  :meth:`Pipeline.to_network_mask` applies the run's recorded label rules (label mapping, by
  the input cohort's label names ``labels`` when they match the run's; the brain label from
  ``image(job)``, by default the first image channel of ``job.case``, read only when needed),
  so every later step, the writers included, sees the network's label values; then the
  optional ``perturb(job, mask) -> (mask, info)`` (seeded from the job, so a volume never
  depends on its batch or rank).
* **Seed rule**: ``seed(job, attempt) -> int``; attempt 0 first, 1, 2, ... for regenerations.
* **Gate** (optional): ``gate(job, image, mask) -> record`` with ``"flagged"``; with
  ``enforce_gate`` a flagged volume is made again with the next attempt's seed, up to
  ``max_retries`` times, then dropped (written as a dropped entry with no image); a record
  with ``"retry": False`` (a new seed cannot change the verdict) is dropped at once.
* **Failures** of the mask step or the gate (``errors``) go to ``on_fail(job, error)``, which may
  re-raise (``--strict``), record, or return a replacement :class:`Job` to try instead.
* **Batches**: ``batch_size`` volumes per :meth:`Pipeline.sample_batch` call (one network call
  per sampling step); each volume has its own generator, so a volume is the same whatever else
  is in its batch (bit-identical at batch size 1, within 1e-4 of the intensity range otherwise).
* **Progress**: ``progress(done, total)`` after every network step, in volumes (fractional
  while a batch is under way).
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import torch

from synthkit.errors import SynthkitError
from synthkit.pipeline.pipeline import Pipeline, Prepared

#: Volumes per network call by default: 1 on the CPU (no gain, more memory), 4 on a GPU.
CUDA_BATCH_SIZE = 4


def default_batch_size(device: str) -> int:
    """The default ``--batch-size``: 1 on the CPU, :data:`CUDA_BATCH_SIZE` on CUDA."""
    return CUDA_BATCH_SIZE if str(device).startswith("cuda") else 1


def runtime_settings(pipe: Pipeline, batch_size: int | None) -> dict[str, Any]:
    """How the volumes are computed, for a manifest: the device type (``cpu``/``cuda``), the
    precision the network runs in and the batch size. Each changes the floating-point result, so a
    resume under other values must not take over the earlier volumes."""
    return {"device": torch.device(pipe.device).type, "precision": pipe.precision or "fp32",
            "batch_size": default_batch_size(pipe.device) if batch_size is None else int(batch_size)}


@dataclasses.dataclass(frozen=True)
class Job:
    """One volume to make: ``key`` (unique; the manifest key), ``case`` (what the mask step
    reads: a cohort case by default), ``k`` (the volume's number for this case), ``index``
    (the case's position in its cohort)."""

    key: Hashable
    case: Any
    k: int = 0
    index: int = 0


@dataclasses.dataclass(frozen=True)
class Sampling:
    """Sampler settings shared by every volume of a run (see :meth:`Pipeline.sample`)."""

    sampler: str = "ddpm"
    steps: int | None = None
    eta: float = 0.0
    background: bool | None = None  # None: on for masks with a head/brain label
    label_space: str = "auto"  # see Pipeline.to_network_mask
    guidance: float = 1.0  # classifier-free guidance on the mask (1: none)


@dataclasses.dataclass
class Made:
    """A finished job handed to the writer: the ``mask`` the image was generated for (in the
    network's label values, perturbed if a perturbation ran), the ``image`` (None when the gate dropped it), every attempt's
    ``{"seed": ..., **gate record}``, the perturbation's ``info`` and the background flag."""

    job: Job
    mask: Any
    image: Any
    attempts: list[dict[str, Any]]
    info: dict[str, Any]
    background: bool

    @property
    def accepted(self) -> bool:
        return self.image is not None

    @property
    def seed(self) -> int:
        return int(self.attempts[-1]["seed"])


@dataclasses.dataclass
class EngineResult:
    """What :meth:`Engine.run` did with this rank's share of the jobs."""

    made: list[Job] = dataclasses.field(default_factory=list)
    dropped: list[Job] = dataclasses.field(default_factory=list)
    resumed: list[Job] = dataclasses.field(default_factory=list)
    failed: list[tuple[Job, str]] = dataclasses.field(default_factory=list)
    batches: int = 0  # Pipeline.sample_batch calls (each one network call per sampling step)


@dataclasses.dataclass
class _Item:  # a job in flight
    job: Job
    mask: Any
    prepared: Prepared
    info: dict[str, Any]
    background: bool
    attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def _read_case(job: Job) -> Any:
    from synthkit.io import read_mask

    return read_mask(job.case)


def first_channel(case: Any) -> Any:
    """The first image channel of a cohort case as a Volume ``(1, D, H, W)``, or None when the
    case lists no image (what the run's brain-label rule reads)."""
    images = getattr(case, "images", None)
    if not images or getattr(case, "missing_images", ()):  # with a channel missing, images[0] may not be channel 0
        return None
    from synthkit.io import read_dicom_series, read_nifti

    vol = read_dicom_series(images[0]) if images[0].is_dir() else read_nifti(images[0])
    return vol if vol.n_channels == 1 else type(vol)(vol.data[:1], vol.affine)


def _case_image(job: Job) -> Any:
    return first_channel(job.case)


class Engine:
    """See the module docstring. ``pipe``: a loaded :class:`Pipeline`; ``sampling``: the
    sampler settings; the rest are the hooks a command configures."""

    def __init__(self, pipe: Pipeline, sampling: Sampling, *, seed: Callable[[Job, int], int],
                 batch_size: int | None = None, read: Callable[[Job], Any] | None = None,
                 image: Callable[[Job], Any] | None = None, labels: dict[str, int] | None = None,
                 perturb: Callable[[Job, Any], tuple[Any, dict[str, Any]]] | None = None,
                 gate: Callable[[Job, Any, Any], dict[str, Any]] | None = None, max_retries: int = 0,
                 enforce_gate: bool = True, errors: tuple[type[BaseException], ...] = (SynthkitError, ValueError),
                 dist: Any = None, progress: Callable[[float, int], None] | None = None):
        from synthkit.errors import UsageError
        from synthkit.runtime.ddp import DistInfo

        self.batch_size = default_batch_size(pipe.device) if batch_size is None else int(batch_size)
        if self.batch_size < 1 or max_retries < 0:
            raise UsageError("--batch-size must be at least 1 and --max-retries at least 0")
        self.pipe, self.sampling, self.seed = pipe, sampling, seed
        self.read = read or _read_case
        self.image, self.labels = image or _case_image, dict(labels) if labels else None
        self.perturb, self.gate = perturb, gate
        self.max_retries, self.enforce_gate, self.errors = max_retries, enforce_gate, errors
        self.dist = dist or DistInfo()
        self.progress = progress
        self._done, self._total = 0.0, 0

    # ------------------------------------------------------------------ run
    def run(self, jobs: Iterable[Job], write: Callable[[Made], dict[str, Any] | None], *, store: Any = None,
            on_fail: Callable[[Job, BaseException], Job | None] | None = None) -> EngineResult:
        """Make every job of this rank's share that ``store`` does not hold yet; ``write(made)``
        writes it and returns its manifest entry (added to ``store``). Returns what happened."""
        from synthkit.runtime.ddp import shard

        res = EngineResult()
        mine = shard(list(jobs), self.dist)
        todo = [j for j in mine if store is None or not store.done(j.key)]
        res.resumed = [j for j in mine if store is not None and store.done(j.key)]
        self._done, self._total = 0.0, len(todo)
        self._report()
        pending = iter(todo)
        retry: collections.deque[_Item] = collections.deque()
        while True:
            batch = [retry.popleft() for _ in range(min(len(retry), self.batch_size))]
            while len(batch) < self.batch_size:
                job = next(pending, None)
                if job is None:
                    break
                item = self._prepare(job, on_fail, res)
                if item is not None:
                    batch.append(item)
            if not batch:
                return res
            images = self._sample(batch)
            res.batches += 1
            for item, image in zip(batch, images):
                made = self._judge(item, image, retry, on_fail, res)
                if made is None:
                    continue
                entry = write(made)
                if store is not None and entry is not None:
                    store.add(entry)
                (res.made if made.accepted else res.dropped).append(item.job)

    def _report(self) -> None:
        if self.progress is not None:
            self.progress(min(self._done, float(self._total)), self._total)

    def _fail(self, job: Job, err: BaseException, on_fail: Any, res: EngineResult) -> Job | None:
        """A failed job: ``on_fail`` decides (raise, record, or a replacement job)."""
        replacement = on_fail(job, err) if on_fail is not None else None
        if replacement is None:
            res.failed.append((job, str(err)))
            self._done += 1
            self._report()
        return replacement

    def _prepare(self, job: Job, on_fail: Any, res: EngineResult) -> _Item | None:
        """The mask step and :meth:`Pipeline.prepare`; None when the job failed for good."""
        while job is not None:
            try:
                mask = self.pipe.to_network_mask(self.read(job), image=lambda j=job: self.image(j), labels=self.labels,
                                                 label_space=self.sampling.label_space)
                info: dict[str, Any] = {}
                if self.perturb is not None:
                    mask, info = self.perturb(job, mask)
                prepared = self.pipe.prepare(mask, "network")
            except self.errors as e:
                job = self._fail(job, e, on_fail, res)
                continue
            bg = prepared.has_head if self.sampling.background is None else bool(self.sampling.background)
            return _Item(job, mask, prepared, info, bg)
        return None

    def _sample(self, batch: Sequence[_Item]) -> list[Any]:
        """One :meth:`Pipeline.sample_batch` call for the batch; volumes on their masks' grids."""
        s = self.sampling
        cond = torch.stack([it.prepared.cond for it in batch])
        seeds = [self.seed(it.job, len(it.attempts)) for it in batch]
        for it, seed in zip(batch, seeds):
            it.attempts.append({"seed": int(seed)})
        start, n = self._done, len(batch)

        def step(i: int, total: int) -> None:
            self._done = start + n * i / max(total, 1)
            self._report()

        x = self.pipe.sample_batch(cond, seeds, sampler=s.sampler, steps=s.steps, eta=s.eta,
                                   background=[it.background for it in batch], progress=step, guidance=s.guidance)
        self._done = start + n
        self._report()
        return [self.pipe.to_volume(x[i], it.prepared.record) for i, it in enumerate(batch)]

    def _judge(self, item: _Item, image: Any, retry: collections.deque, on_fail: Any,
               res: EngineResult) -> Made | None:
        """Run the gate on a fresh volume: Made (accepted or dropped), or None (queued again, failed)."""
        if self.gate is not None:
            try:
                item.attempts[-1].update(self.gate(item.job, image, item.mask))
            except self.errors as e:  # the volume was made: no replacement job is taken now
                if on_fail is not None:
                    on_fail(item.job, e)
                res.failed.append((item.job, str(e)))
                return None
            if self.enforce_gate and item.attempts[-1].get("flagged"):
                if len(item.attempts) <= self.max_retries and item.attempts[-1].get("retry", True):
                    retry.append(item)
                    self._total += 1
                    self._report()
                    return None
                image = None
        return Made(item.job, item.mask, image, item.attempts, item.info, item.background)


def as_progress(progress: Any, label: str) -> Callable[[float, int], None] | None:
    """An engine progress callback from None, a callable ``(done, total)``, or a rich
    ``Progress`` (a task named ``label`` is added to it)."""
    if progress is None or not hasattr(progress, "add_task"):
        return progress
    task = progress.add_task(label, total=None)
    return lambda done, total: progress.update(task, completed=done, total=total)
