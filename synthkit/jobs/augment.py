"""``synthkit augment``: a training set of synthetic (or classically augmented) cases.

Two methods, both writing an nnU-Net v2 raw dataset (:mod:`synthkit.augment.dataset`):

* ``"diffusion"`` (needs a trained run): copy ``i`` (``i = 0 .. n-1``) takes the mask of real
  case ``i mod M`` (cohort order), perturbs it with :func:`synthkit.masks.perturb` (``ops``,
  default ``move``) and generates an image for the perturbed mask; the case ``syn_{i:05d}`` is
  that image with the perturbed mask as its label (the paper's Med-DDPM rows of Table II).
  This is the ``augment`` configuration of the synthesis engine
  (:class:`synthkit.pipeline.engine.Engine`: perturbation on, no gate, ``batch_size`` volumes
  per network call);
* ``"classic"`` (no model): copy ``i`` is :func:`synthkit.augment.classic.augment_case` of real
  case ``i mod M`` (image and label together), as ``aug_{i:05d}`` (the paper's "Augmented
  images" rows; :func:`synthkit.augment.copies.classic_copies`).

With ``include_real`` the real cases are added as ``real_{j:04d}`` (images and masks copied
onto a clean header; :func:`synthkit.augment.copies.real_copies`).

Labels: with a model, every mask (the synthetic copies' and, with ``include_real``, the real
ones) is first put into the model's label values by the run's recorded rules
(:meth:`synthkit.pipeline.Pipeline.to_network_mask`: the label mapping and the brain label from
the case's first image channel), so a raw BraTS cohort needs no flags and real and synthetic
cases share one label table; the mask operations work on those labels (``tumour_labels`` /
``head_labels`` given as numbers are the model's values; names are safer). Without a model the
cohort's own labels are kept. Either way the dataset is written with consecutive label values,
the names kept in ``dataset.json`` (:class:`synthkit.io.nnunet.NnunetWriter`). Case names never carry the source case id (which may identify a
patient); ``augment.json`` records each copy's source *index*, seeds and the applied
parameters (mask operations or augmentation transforms), enough to replay it.

Randomness: copy ``i`` uses ``numpy.random.default_rng([seed, i, 0])`` for the mask
perturbation and the seed ``SeedSequence([seed, i, 1])`` for generation or augmentation, so a
copy depends only on (seed, i, its source case), not on other copies. When a source case
fails (unreadable, or no valid perturbation), the copy moves on to the next case
(``i + 1 mod M``, ...) and the failure is reported; ``strict`` raises instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from synthkit.augment.classic import ClassicAugmentConfig
from synthkit.augment.copies import classic_copies, dataset_labels, real_copies
from synthkit.augment.dataset import NnunetDatasetWriter
from synthkit.errors import SynthkitError, UsageError
from synthkit.pipeline.seeds import copy_seed

MANIFEST_FORMAT = "synthkit.augment/1"


@dataclass
class AugmentReport:
    """What :func:`augment_cohort` wrote: the dataset folder, case counts, failure messages."""

    out: Path
    n_generated: int = 0
    n_real: int = 0
    failures: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


class _BadSource(SynthkitError):
    """This source case was found unreadable before: move on without a new message."""


def _check_args(method: str, n: int, include_real: bool, seed: int, model: Any) -> None:
    if method not in ("diffusion", "classic"):
        raise UsageError(f"unknown augmentation method {method!r} (diffusion or classic)")
    if n < 0:
        raise UsageError(f"--n must be >= 0, got {n}")
    if n == 0 and not include_real:
        raise UsageError("nothing to write: --n 0 without --include-real")
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    if method == "diffusion" and model is None and n > 0:
        raise UsageError("--model RUN is required (or --baseline classic for classic augmentation)")
    if method == "classic" and model is not None:
        raise UsageError("--baseline classic takes no --model")


def _load_model(model: Any, device: str, coh: Any, need_images: bool,
                precision: str | None = None) -> tuple[Any, tuple[str, ...]]:
    """(Pipeline, channel names of the dataset) for ``model`` (a run, a name or a Pipeline)."""
    if isinstance(model, (str, Path)):
        from synthkit.pipeline import load

        model = load(model, device=device, precision=precision)
    channel_names = tuple(model.config.data.channel_names)
    if len(channel_names) != model.image_channels:
        channel_names = tuple(f"channel_{c}" for c in range(model.image_channels))
    if need_images and coh.channel_names and len(coh.channel_names) != model.image_channels:
        raise UsageError(f"the model generates {model.image_channels} channel(s), the cohort has "
                         f"{len(coh.channel_names)}", coh.root)
    if coh.channel_names and len(coh.channel_names) == model.image_channels:
        channel_names = tuple(coh.channel_names)
    return model, channel_names


def _synthetic_copies(gen: Any, coh: Any, cases: list[Any], writer: Any, fail: Callable[[str], None], *, n: int,
                      ops: Any, seed: int, sampler: str, steps: int | None, tumour_labels: Any, head_labels: Any,
                      batch_size: int | None, report: Callable[[float, int], None]) -> list[dict[str, Any]]:
    """Copies ``syn_00000`` ... through the engine: job ``i`` starts at source ``i mod M`` and
    moves on to the next source when one fails (``job.k`` counts the sources tried)."""
    from synthkit.io import read_mask
    from synthkit.masks.constraints import MaskOpError
    from synthkit.pipeline.engine import Engine, Job, Sampling, first_channel
    from synthkit.pipeline.perturb import MaskPerturbation

    perturbation = MaskPerturbation(ops, rng=lambda job: np.random.default_rng([int(seed), int(job.index), 0]),
                                    labels=gen.network_labels(), tumour_labels=tumour_labels, head_labels=head_labels,
                                    case_id=lambda job: cases[job.case].case_id)
    if any(s.name == "transplant" for s in perturbation.specs):
        from synthkit.masks.pipeline import CohortDonors

        perturbation.donors = CohortDonors(coh)
    bad: set[int] = set()
    records: list[dict[str, Any]] = []

    def read(job: Job) -> Any:
        if job.case in bad:
            raise _BadSource("unreadable")
        return read_mask(cases[job.case])

    def on_fail(job: Job, err: BaseException) -> Job:
        if not isinstance(err, _BadSource):
            fail(f"copy {job.index} from source case #{job.case}: {err}")
            if not isinstance(err, MaskOpError):
                bad.add(job.case)  # unreadable: never try this case again
        if job.k + 1 >= len(cases):
            raise UsageError(f"no source case could produce copy {job.index}; see the errors above", coh.root)
        return Job(job.key, (job.case + 1) % len(cases), job.k + 1, job.index)

    def write(made: Any) -> None:
        cid = f"syn_{made.job.index:05d}"
        writer.write_case(cid, made.image, made.mask)
        records.append({"case": cid, "source": made.job.case, "seed": made.seed, "ops": made.info["ops"]})

    engine = Engine(gen, Sampling(sampler, steps), seed=lambda job, attempt: copy_seed(seed, job.index, 1),
                    read=read, image=lambda job: first_channel(cases[job.case]), labels=dict(coh.labels),
                    perturb=perturbation, batch_size=batch_size, progress=report)
    engine.run([Job(i, i % len(cases), 0, i) for i in range(n)], write, on_fail=on_fail)
    return records


def augment_cohort(
    cohort: str | Path,
    out: str | Path,
    *,
    n: int | None = None,
    per_mask: int | None = None,
    method: Literal["diffusion", "classic"] = "diffusion",
    model: Any = None,
    include_real: bool = False,
    ops: str | Sequence[str] | None = None,
    sampler: str = "ddpm",
    steps: int | None = None,
    seed: int = 0,
    tumour_labels: Sequence[str | int] | None = None,
    head_labels: Sequence[str | int] | None = None,
    device: str = "cpu",
    classic: ClassicAugmentConfig | None = None,
    overwrite: bool = False,
    strict: bool = False,
    batch_size: int | None = None,
    precision: str | None = None,
    progress: Any = None,
) -> AugmentReport:
    """Write ``n`` synthetic/augmented cases (plus the real ones with ``include_real``) from the
    cohort folder ``cohort`` as an nnU-Net v2 raw dataset in ``out`` (module docstring).

    ``model``: a run folder, shipped model name or a loaded :class:`synthkit.pipeline.Pipeline`
    (``method="diffusion"`` only). ``ops``: mask operations (``"move+deform:elastic=2"``, see
    :mod:`synthkit.masks`). ``sampler``/``steps``: as for ``synthkit sample``. ``batch_size``:
    volumes per network call (default 1 on the CPU, 4 on CUDA). ``precision``: of the network
    calls (see :func:`synthkit.pipeline.load`). ``progress``: a rich ``Progress`` or a callable
    ``(done, total)`` in cases. How many copies: ``per_mask`` of every usable case (``n =
    per_mask * cases``) or ``n`` in all (sources taken in turn); exactly one of the two.
    """
    from synthkit.io import discover_cohort
    from synthkit.pipeline.engine import as_progress

    if (n is None) == (per_mask is None):
        raise UsageError("give the number of copies as --per-mask K or (deprecated) --n N, one of the two")
    if per_mask is not None and per_mask < 0:
        raise UsageError(f"--per-mask must be >= 0, got {per_mask}")
    classic = classic or ClassicAugmentConfig()
    need_images = include_real or method == "classic"
    coh = discover_cohort(cohort, need_images=need_images)
    out = Path(out)
    if out.resolve() == Path(coh.root).resolve():
        raise UsageError("the output folder must differ from the cohort folder", out)
    cases = [c for c in coh.cases if c.mask is not None and not c.problems and (c.images or not need_images)]
    if not cases:
        raise UsageError("no usable case (mask, and image where needed) in the cohort", coh.root)
    if per_mask is not None:
        n = per_mask * len(cases)
    _check_args(method, n, include_real, seed, model)
    failures: list[str] = []

    def fail(msg: str) -> None:
        if strict:
            raise UsageError(msg)
        failures.append(msg)

    n_bad_listed = len(coh.cases) - len(cases)
    if n_bad_listed:
        fail(f"{n_bad_listed} case(s) of the cohort left out (missing mask/image or other problems)")
    gen, channel_names = None, tuple(coh.channel_names)
    if method == "diffusion" and n > 0:
        gen, channel_names = _load_model(model, device, coh, need_images, precision)
    writer = NnunetDatasetWriter(out, channel_names or None, dataset_labels(coh, cases, gen), overwrite=overwrite)
    tick = as_progress(progress, "classic augmentation" if method == "classic" else "generate") or (lambda d, t: None)
    total = n + (len(cases) if include_real else 0)
    records: list[dict[str, Any]] = []
    if gen is not None:
        records += _synthetic_copies(gen, coh, cases, writer, fail, n=n, ops=ops, seed=seed, sampler=sampler,
                                     steps=steps, tumour_labels=tumour_labels, head_labels=head_labels,
                                     batch_size=batch_size, report=lambda d, t: tick(d, total))
    elif method == "classic" and n > 0:
        records += classic_copies(coh, cases, writer, fail, n=n, seed=seed, classic=classic,
                                  report=lambda d, t: tick(d, total))
    n_real = 0
    if include_real:
        real = real_copies(cases, writer, fail, report=lambda d, t: tick(n + d, total), gen=gen,
                           labels=dict(coh.labels))
        records += real
        n_real = len(real)
    manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, "method": method, "n": n, "include_real": include_real,
                                "per_mask": per_mask, "seed": seed, "n_source_cases": len(cases), "n_failures": len(failures)}
    if gen is not None:
        from synthkit.masks.ops import parse_op_specs
        from synthkit.pipeline.engine import runtime_settings

        manifest.update(ops=[{"op": s.name, "options": dict(s.options)} for s in parse_op_specs(ops)],
                        sampler=sampler, steps=steps, **runtime_settings(gen, batch_size),
                        model={"preset": gen.config.preset, "weights_sha256": gen.weights_sha256})
    if method == "classic":
        import dataclasses

        manifest["classic"] = dataclasses.asdict(classic)
    manifest["cases"] = records
    writer.finish(manifest)
    return AugmentReport(out=out, n_generated=n, n_real=n_real, failures=failures, manifest=manifest)
