"""``augment_cohort``: a training set of synthetic (or classically augmented) cases.

Two methods, both writing an nnU-Net v2 raw dataset (:mod:`synthkit.augment.dataset`):

* ``"diffusion"`` (needs a trained run): copy ``i`` (``i = 0 .. n-1``) takes the mask of real
  case ``i mod M`` (cohort order), perturbs it with :func:`synthkit.masks.perturb` (``ops``,
  default ``move``) and generates an image for the perturbed mask with the run's
  :meth:`~synthkit.run.Generator.sample`; the case ``syn_{i:05d}`` is that image with the
  perturbed mask as its label (the paper's Med-DDPM rows of Table II);
* ``"classic"`` (no model): copy ``i`` is :func:`synthkit.augment.classic.augment_case` of real
  case ``i mod M`` (image and label together), as ``aug_{i:05d}`` (the paper's "Augmented
  images" rows).

With ``include_real`` the real cases are added as ``real_{j:04d}`` (images and masks copied
onto a clean header). Case names never carry the source case id (which may identify a
patient); ``augment.json`` records each copy's source *index*, seeds and the applied
parameters (mask operations or augmentation transforms), enough to replay it.

Randomness: copy ``i`` uses ``numpy.random.default_rng([seed, i, 0])`` for the mask
perturbation and the seed ``SeedSequence([seed, i, 1])`` for generation or augmentation, so a
copy depends only on (seed, i, its source case), not on other copies. When a source case
fails (unreadable, or no valid perturbation), the copy moves on to the next case
(``i + 1 mod M``, ...) and the failure is reported; ``strict`` raises instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from synthkit.augment.classic import ClassicAugmentConfig
from synthkit.augment.dataset import NnunetDatasetWriter
from synthkit.errors import SynthkitError, UsageError
from synthkit.io.volume import grid_mismatch

MANIFEST_FORMAT = "synthkit.augment/1"


@dataclass
class AugmentReport:
    """What :func:`augment_cohort` wrote: the dataset folder, case counts, failure messages."""

    out: Path
    n_generated: int = 0
    n_real: int = 0
    failures: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)


def copy_seed(seed: int, i: int, stream: int) -> int:
    """A 63-bit seed for copy ``i`` (``stream`` 0: mask perturbation, 1: image)."""
    return int(np.random.SeedSequence([int(seed), int(i), int(stream)]).generate_state(1, np.uint64)[0] >> 1)


def _labels_for(cohort_labels: dict[str, int], seen: set[int]) -> dict[str, int]:
    """dataset.json labels: the cohort's names when it declares them, else ``label_{v}``."""
    if cohort_labels and cohort_labels.get("background") == 0:
        out = dict(cohort_labels)
        for v in sorted(seen - set(out.values())):
            out[f"label_{v}"] = int(v)
        return out
    return {"background": 0, **{f"label_{v}": int(v) for v in sorted(seen) if v != 0}}


def augment_cohort(
    cohort: str | Path,
    out: str | Path,
    *,
    n: int,
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
    progress: Any = None,
) -> AugmentReport:
    """Write ``n`` synthetic/augmented cases (plus the real ones with ``include_real``) from the
    cohort folder ``cohort`` as an nnU-Net v2 raw dataset in ``out`` (module docstring).

    ``model``: a run folder, shipped model name or a loaded :class:`synthkit.run.Generator`
    (``method="diffusion"`` only). ``ops``: mask operations (``"move+deform:elastic=2"``, see
    :mod:`synthkit.masks`). ``sampler``/``steps``: passed to ``Generator.sample``.
    ``progress``: optional rich ``Progress``.
    """
    from synthkit.io import discover_cohort, read_image, read_mask

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
    classic = classic or ClassicAugmentConfig()
    need_images = include_real or method == "classic"
    coh = discover_cohort(cohort, need_images=need_images)
    out = Path(out)
    if out.resolve() == Path(coh.root).resolve():
        raise UsageError("the output folder must differ from the cohort folder", out)
    cases = [c for c in coh.cases if c.mask is not None and not c.problems and (c.images or not need_images)]
    if not cases:
        raise UsageError("no usable case (mask, and image where needed) in the cohort", coh.root)
    failures: list[str] = []
    n_bad_listed = len(coh.cases) - len(cases)
    if n_bad_listed:
        failures.append(f"{n_bad_listed} case(s) of the cohort left out (missing mask/image or other problems)")
        if strict:
            raise UsageError(failures[-1], coh.root)

    gen = None
    specs = None
    if method == "diffusion" and n > 0:
        from synthkit.masks.ops import parse_op_specs

        specs = parse_op_specs(ops)
        if isinstance(model, (str, Path)):
            from synthkit.run import load

            gen = load(model, device=device)
        else:
            gen = model
        channel_names = tuple(gen.config.data.channel_names)
        if len(channel_names) != gen.image_channels:
            channel_names = tuple(f"channel_{c}" for c in range(gen.image_channels))
        if need_images and coh.channel_names and len(coh.channel_names) != gen.image_channels:
            raise UsageError(
                f"the model generates {gen.image_channels} channel(s), the cohort has {len(coh.channel_names)}",
                coh.root,
            )
        if coh.channel_names and len(coh.channel_names) == gen.image_channels:
            channel_names = tuple(coh.channel_names)
    else:
        channel_names = tuple(coh.channel_names)

    # channel names may be unknown until an image is read (flat layouts): fixed at first write
    writer: NnunetDatasetWriter | None = None
    if channel_names:
        writer = NnunetDatasetWriter(out, channel_names, {"background": 0}, overwrite=overwrite)
    seen: set[int] = set()

    def write(case_id: str, image, label) -> None:
        nonlocal writer
        if writer is None:
            names = channel_names if len(channel_names) == image.n_channels else tuple(
                f"channel_{c}" for c in range(image.n_channels))
            writer = NnunetDatasetWriter(out, names, {"background": 0}, overwrite=overwrite)
        writer.write_case(case_id, image, label)
        seen.update(int(v) for v in np.unique(label.data))

    def fail(msg: str) -> None:
        if strict:
            raise UsageError(msg)
        failures.append(msg)

    task = None
    if progress is not None:
        label = "classic augmentation" if method == "classic" else "generate"
        task = progress.add_task(label, total=n + (len(cases) if include_real else 0))

    records: list[dict[str, Any]] = []
    bad: set[int] = set()
    donors = None
    if specs is not None and any(s.name == "transplant" for s in specs):
        from synthkit.masks.pipeline import CohortDonors

        donors = CohortDonors(coh)

    for i in range(n):
        done = False
        for attempt in range(len(cases)):
            j = (i + attempt) % len(cases)
            if j in bad:
                continue
            case = cases[j]
            try:
                mask = read_mask(case)
                if method == "classic":
                    from synthkit.augment.classic import augment_case

                    image = read_image(case)
                    s = copy_seed(seed, i, 1)
                    img, lab, applied = augment_case(image, mask, s, classic)
                    cid = f"aug_{i:05d}"
                    record = {"case": cid, "source": j, "seed": s, "transforms": applied}
                else:
                    from synthkit.io.volume import Volume
                    from synthkit.masks.context import SampleContext
                    from synthkit.masks.labels import resolve_roles
                    from synthkit.masks.ops import chain_to_json, perturb

                    labels = mask.data[0]
                    roles = resolve_roles(tumour_labels, head_labels, coh.labels, np.unique(labels).tolist())
                    ctx = SampleContext(roles=roles, spacing=mask.spacing, case_id=case.case_id, donors=donors)
                    rng = np.random.default_rng([int(seed), int(i), 0])
                    new_labels, chain = perturb(labels, specs, ctx, rng)
                    new_mask = Volume(np.asarray(new_labels, dtype=np.int16)[None], mask.affine)
                    s = copy_seed(seed, i, 1)
                    img = gen.sample(new_mask, seed=s, sampler=sampler, steps=steps)
                    lab = new_mask
                    cid = f"syn_{i:05d}"
                    record = {"case": cid, "source": j, "seed": s, "ops": chain_to_json(chain)}
            except (SynthkitError, ValueError) as e:
                from synthkit.masks.constraints import MaskOpError

                fail(f"copy {i} from source case #{j}: {e}")
                if not isinstance(e, MaskOpError):
                    bad.add(j)  # unreadable: never try this case again
                continue
            write(cid, img, lab)  # outside the try: a write error is never blamed on the case
            records.append(record)
            done = True
            break
        if not done:
            raise UsageError(f"no source case could produce copy {i}; see the errors above", coh.root)
        if task is not None:
            progress.advance(task)

    n_real = 0
    if include_real:
        for j, case in enumerate(cases):
            try:
                image, mask = read_image(case), read_mask(case)
                why = grid_mismatch(image.spatial_shape, image.affine, mask.spatial_shape, mask.affine)
                if why:
                    raise ValueError(f"image and mask grids differ ({why})")
            except (SynthkitError, ValueError) as e:
                fail(f"real case #{j}: {e}")
            else:
                cid = f"real_{j:04d}"
                write(cid, image, mask)
                records.append({"case": cid, "source": j, "real": True})
                n_real += 1
            if task is not None:
                progress.advance(task)
    if writer is None:
        raise UsageError("no case could be written", coh.root)
    writer.labels = _labels_for(dict(coh.labels), seen)
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "method": method,
        "n": n,
        "include_real": include_real,
        "seed": seed,
        "n_source_cases": len(cases),
        "n_failures": len(failures),
    }
    if method == "diffusion" and gen is not None:
        manifest.update(
            ops=[{"op": s.name, "options": dict(s.options)} for s in specs or []],
            sampler=sampler,
            steps=steps,
            model={"preset": gen.config.preset, "weights_sha256": gen.weights_sha256},
        )
    if method == "classic":
        import dataclasses

        manifest["classic"] = dataclasses.asdict(classic)
    manifest["cases"] = records
    writer.finish(manifest)
    return AugmentReport(out=out, n_generated=n, n_real=n_real, failures=failures, manifest=manifest)
