"""``synthkit anonymize``: a real cohort in, a shareable synthetic cohort out.

The ``anonymize`` configuration of the synthesis engine (:class:`synthkit.pipeline.engine.Engine`:
mask perturbation on, the privacy gate on, the de-identifying writer). For every case of the
input cohort (any layout synthkit reads, DICOM included; only masks are used) and every
``k < per_case``:

1. the case's mask, perturbed with :mod:`synthkit.masks` (``perturb_masks``: by default
   ``"template"``, the patient's tumour in a head from a reference pool that is not the
   patient's, the demo heads or ``template:heads=DIR``; ``"deform"``, a small whole-mask affine
   + elastic warp that keeps the patient's head outline; e.g. ``"move+deform"``; None keeps the
   mask as it is; benchmarks/results/mask_privacy.md compares them), conditions the trained
   model, which generates an image;
2. the memorization check (:mod:`synthkit.privacy.audit.check`) compares it with the training cohort
   (its path recorded with the run, or given; calibrated on ``holdout`` when given); when the
   input case is itself a training subject (its mask has the same voxels as a training mask),
   the re-identification attack ranks the training subjects for it
   (:mod:`synthkit.privacy.gate`). With the privacy gate on, a volume flagged as a
   copy, or (``gate_linkage``, on by default when sources are known) whose own source is the
   attacker's top-1 match, is regenerated with a new seed up to ``max_retries`` times and
   dropped if it stays flagged (at once when the head outline, fixed by the mask, flags it);
3. image(s) and mask go through the de-identifying NIfTI writer under a fresh opaque id
   (``syn_`` + 12 hex digits from a generator seeded by ``seed``), optionally also as DICOM,
   on a geometry that is not the source scan's (:func:`synthkit.privacy.deid.outputs.canonical_affine`:
   the same voxels and anatomical orientation, voxel sizes rounded to 0.01 mm, obliquity
   dropped, the grid centred on the world origin); ``keep_geometry`` keeps the source case's
   exact affine, a link back to the input scan.

Masks are put into the model's label values by the run's recorded rules before anything else
(:meth:`synthkit.pipeline.Pipeline.to_network_mask`: the label mapping, by the cohort's label
names when they match the run's, and the brain label from the case's first image channel), so a
raw BraTS cohort (labels 0/1/2/4, images beside the masks) goes through a model trained the
paper's way with no flags; the dataset is written with consecutive label values (nnU-Net v2).

Seeds: the mask warp of output ``oid`` draws from ``seed_for(seed, oid + ":mask", 0)``, attempt
``a`` of its image from ``seed_for(seed, oid, a)``; ``batch_size`` volumes share a network call
(default 1 on the CPU, 4 on CUDA) without changing which volume gets which seed.

Output (nnU-Net raw layout)::

    OUT/imagesTr/syn_3fa9c2e1b7d0_0000.nii.gz     OUT/labelsTr/syn_3fa9c2e1b7d0.nii.gz
    OUT/dataset.json   OUT/manifest.json   OUT/privacy_report.html   [OUT/dicom/<id>/<channel>/IM*.dcm]

The manifest holds the model hash, settings, per-volume seeds and privacy results (the
attacks of :mod:`synthkit.privacy.gate_report`: re-identification rates of the written
volumes and before the gate, membership inference with ``holdout``), sorted by output id;
neither it nor anything else in OUT names an input, training or holdout case. The
input->output mapping is written only on request, outside OUT. Re-running with the same
arguments continues where a run stopped (finished volumes are kept); a case that fails is
reported and the others go on. Before anything is generated, every identifier of the input is
collected (:func:`synthkit.privacy.deid.identifiers.identifier_needles`: case ids and path components,
every PN/LO/SH/DA/DT/TM/UI/AS value of every DICOM file, NIfTI header text; short values as whole
tokens); an input file whose identifiers cannot be read stops the run there, with nothing
written (the scan fails closed). Finally OUT is scanned for them, and for the training and
holdout case ids, with
:func:`synthkit.privacy.deid.identifiers.scan_for_identifiers`; a hit fails the run.

Output ids depend only on ``seed`` and the position of the case in the sorted input cohort:
``seed`` is therefore the key that links outputs back to inputs; keep it private. (The masks
themselves link back more directly when ``perturb_masks`` is None: a model that follows its
mask reproduces the subject's exact head outline, and the gate then drops most volumes.)
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.errors import SynthkitError, UsageError
from synthkit.pipeline.seeds import seed_for
from synthkit.privacy.audit.check import CheckSettings
from synthkit.privacy.deid import dicom_export, identifiers, outputs
from synthkit.privacy.deid.identifiers import LONG_NEEDLE, identifier_needles
from synthkit.privacy.gate import SEEDS, PrivacyRun, Reference, prepare_reference

FORMAT = "synthkit-anonymize/1"
MANIFEST = "manifest.json"
_ID_STREAM = 0xA11D


@dataclass(frozen=True)
class AnonymizeSettings:
    per_case: int = 1
    sampler: str = "ddpm"
    steps: int | None = None
    eta: float = 0.0
    seed: int = 0
    privacy_gate: bool = True
    gate_linkage: bool | None = None  # None: on when some input case is a training subject
    max_retries: int = 3
    perturb_masks: str | None = "template"  # the least re-identifiable (benchmarks/mask_privacy.py)
    dicom: bool = False
    keep_geometry: bool = False
    check: CheckSettings = field(default_factory=CheckSettings)


@dataclass
class AnonymizeResult:
    """What happened. ``failed`` holds (input case id, message): for the operator's terminal only."""

    out: Path
    written: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    resumed: int = 0
    privacy_checked: bool = False


def recorded_train_cohort(run_dir: Path) -> Path | None:
    """The training cohort folder recorded with a run, if any (``config.json`` key
    ``data.cohort_path`` / top-level ``train_cohort``, or a ``train_cohort.json`` sidecar)."""
    candidates: list[Any] = []
    try:
        cfg = json.loads((run_dir / "config.json").read_text())
        candidates += [cfg.get("train_cohort"), (cfg.get("data") or {}).get("cohort_path")]
    except (OSError, ValueError, AttributeError):
        pass
    try:
        side = json.loads((run_dir / "train_cohort.json").read_text())
        candidates.append(side.get("path") if isinstance(side, dict) else None)
    except (OSError, ValueError):
        pass
    for c in candidates:
        if isinstance(c, str) and c and Path(c).is_dir():
            return Path(c)
    return None


def _inside(a: Path, b: Path) -> bool:
    a, b = a.resolve(), b.resolve()
    return a == b or b in a.parents


def public_ops(ops: str | None) -> str | None:
    """The mask operations as the manifest records them: a folder option (``template:heads=DIR``)
    becomes ``dir:`` + the first 12 hex digits of the SHA-256 of its absolute path, because a path
    may name a patient or a site."""
    if not ops:
        return ops
    import hashlib

    from synthkit.masks import parse_op_specs

    parts = []
    for spec in parse_op_specs(ops):
        opts = {k: ("dir:" + hashlib.sha256(str(Path(v).resolve()).encode()).hexdigest()[:12] if k == "heads" else v)
                for k, v in spec.options.items()}
        parts.append(spec.name + (":" + ",".join(f"{k}={v}" for k, v in opts.items()) if opts else ""))
    return "+".join(parts)


def _fingerprint(gen: Any, s: AnonymizeSettings, n_cases: int, holdout: bool) -> dict[str, Any]:
    d = asdict(s)
    d["check"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["check"].items()}
    d["perturb_masks"] = public_ops(s.perturb_masks)
    return {"weights_sha256": gen.weights_sha256, "n_cases": n_cases, "holdout": holdout, **d}


def _refuse_other(out: Path) -> Callable[[dict[str, Any]], None]:
    def refuse(old: dict[str, Any]) -> None:
        raise UsageError("the output folder holds a synthetic cohort made with other settings, model or "
                         "input; choose a new --out (or repeat the original arguments to resume)", out)

    return refuse


def _output_geometry(made: Any, s: AnonymizeSettings) -> tuple[Any, Any]:
    """(image, mask) on the output geometry: :func:`outputs.canonical_affine` of the source grid,
    or the source's own affine with ``keep_geometry``."""
    from synthkit.io.volume import Volume

    image, mask = made.image, made.mask
    if s.keep_geometry:
        return image, mask
    affine = outputs.canonical_affine(image.affine, image.spatial_shape)
    return Volume(image.data, affine), Volume(mask.data, affine)


def _writer(out: Path, s: AnonymizeSettings, channels: tuple[str, ...], n_channels: int,
            labels: dict[str, int]) -> tuple[Any, Callable[[Any], dict[str, Any]]]:
    """The dataset writer (de-identifying NIfTI, ``labels``: the model's label table, written
    consecutive) and the engine's write step: the volume (and its DICOM series) under the job's
    opaque id, on the output geometry; it returns the manifest entry (a dropped volume: its
    attempts, no files)."""
    from synthkit.io.nnunet import NnunetWriter

    writer = NnunetWriter(out, channels if len(channels) == n_channels else None, labels, existing="keep",
                          nifti=outputs.write_deidentified_nifti)

    def write(made: Any) -> dict[str, Any]:
        oid = made.job.key
        entry: dict[str, Any] = {"id": oid, "attempts": made.attempts, "perturbed_mask": bool(s.perturb_masks)}
        if not made.accepted:
            entry.update(status="dropped", files=[])
            return entry
        vol, mask = _output_geometry(made, s)
        files = writer.write_case(oid, vol, mask)
        if s.dicom:
            rng = np.random.default_rng(seed_for(s.seed, oid + ":dicom", 0))
            study = dicom_export.DicomStudy.new(rng)
            for c in range(vol.data.shape[0]):
                name = channels[c] if c < len(channels) else f"channel {c}"
                dicom_export.write_dicom_series(out / "dicom" / oid / f"{c:04d}", vol.data[c], vol.affine, rng=rng,
                                        study=study, series_number=c + 1, series_description=f"synthetic {name}")
        entry.update(status="ok", seed=made.seed, files=files,
                     privacy={k: v for k, v in made.attempts[-1].items() if k != "seed"})
        return entry

    return writer, write


def _engine(gen: Any, s: AnonymizeSettings, cohort: Any, gate: Callable[..., dict[str, Any]] | None,
            batch_size: int | None, progress: Any) -> Any:
    from synthkit.pipeline.engine import Engine, Sampling, as_progress
    from synthkit.pipeline.perturb import MaskPerturbation

    perturb = None
    if s.perturb_masks:
        perturb = MaskPerturbation(s.perturb_masks, labels=gen.network_labels(),
                                   rng=lambda job: np.random.default_rng(seed_for(s.seed, job.key + ":mask", 0)))
    return Engine(gen, Sampling(s.sampler, s.steps, s.eta), seed=lambda job, attempt: seed_for(s.seed, job.key, attempt),
                  labels=dict(cohort.labels), perturb=perturb, gate=gate, max_retries=s.max_retries,
                  enforce_gate=s.privacy_gate, errors=(SynthkitError, ValueError, RuntimeError), batch_size=batch_size,
                  progress=as_progress(progress, "anonymize"))


def _check_paths(out: Path, src: Path, holdout: str | Path | None, mapping: str | Path | None) -> None:
    if _inside(out, src) or _inside(src, out):
        raise UsageError("the output folder must be outside the input cohort (and not contain it)", out)
    if holdout is not None:
        if not Path(holdout).is_dir():
            raise UsageError("--holdout must be a cohort folder", holdout)
        if _inside(out, Path(holdout)) or _inside(Path(holdout), out):
            raise UsageError("the output folder must be outside the holdout cohort (and not contain it)", out)
    if mapping is not None:
        outputs.check_mapping_path(mapping, out)


def _input_cohort(src: Path, limit: int | None) -> Any:
    """The input cohort (masks only; images are not read), its first ``limit`` cases with ``limit``."""
    from synthkit.io import discover_cohort

    cohort = discover_cohort(src, need_images=False)
    if limit is None:
        return cohort
    if limit < 1:
        raise UsageError(f"limit must be at least 1, got {limit}")
    return dataclasses.replace(cohort, cases=cohort.cases[:limit])


def _manifest_store(out: Path, gen: Any, s: AnonymizeSettings, priv: PrivacyRun, n_cases: int, has_holdout: bool,
                    batch_size: int | None) -> Any:
    """The manifest (resumable; refuses an output made with other settings, model or input)."""
    from synthkit.pipeline.engine import runtime_settings
    from synthkit.pipeline.manifest import ManifestStore

    fp = {**_fingerprint(gen, s, n_cases, has_holdout), **runtime_settings(gen, batch_size)}
    if not (out / MANIFEST).is_file() and out.exists() and any(out.iterdir()):
        raise UsageError("the output folder exists and is not an anonymize output; choose a new --out", out)

    def document(cases: list[dict[str, Any]], failures: list[dict[str, Any]]) -> dict[str, Any]:
        return {"format": FORMAT, "generator": "synthkit",
                "model": {"weights_sha256": gen.weights_sha256, "preset": gen.config.preset}, "settings": fp,
                "privacy": priv.section(s.privacy_gate), "cases": cases, "n_failed": len(failures)}

    return ManifestStore(out / MANIFEST, {"format": FORMAT, "settings": fp}, key=lambda e: e["id"],
                         files=lambda e: e.get("files", []), document=document, entries_key="cases",
                         on_other=_refuse_other(out))


def anonymize(
    cohort_path: str | Path,
    run: str | Path,
    out: str | Path,
    *,
    settings: AnonymizeSettings | None = None,
    train_cohort: str | Path | None = None,
    holdout: str | Path | None = None,
    mapping: str | Path | None = None,
    feature_weights: str | Path | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
    precision: str | None = None,
    reference: Reference | None = None,
    limit: int | None = None,
    on_case: Callable[[], None] | None = None,
    on_note: Callable[[str], None] | None = None,
    on_attempt: Callable[[Any, Any, Any, dict[str, Any]], None] | None = None,
    progress: Any = None,
) -> AnonymizeResult:
    """Write a synthetic, de-identified copy of the cohort at ``cohort_path`` to ``out``.

    ``holdout``: real cases (with masks) the model was not trained on: the check is calibrated
    on them and the membership attack is run. ``reference``: a prepared
    :class:`~synthkit.privacy.gate.Reference` to reuse across calls (its check settings
    must be ``settings.check``; it replaces ``train_cohort``, ``holdout`` and ``feature_weights``).
    ``limit``: only the first ``limit`` cases of the input cohort (in its sorted order); their
    volumes are those the whole cohort's run makes for them (same output ids and seeds), judged
    by bounds for a run of this size.
    ``on_case``: called once per output volume finished (written, dropped, failed or kept).
    ``on_attempt(job, image, mask, record)``: called for every generated volume the gate judged.
    ``progress``: a rich ``Progress`` or a callable ``(done, total)`` in volumes, every step.
    """
    from synthkit.pipeline import load
    from synthkit.pipeline.engine import Job

    s = settings or AnonymizeSettings()
    note = on_note or (lambda msg: None)
    tick = on_case or (lambda: None)
    out, src = Path(out), Path(cohort_path)
    if s.per_case < 1 or s.max_retries < 0:
        raise UsageError("--per-case must be >= 1 and --max-retries >= 0")
    if reference is not None and reference.settings != s.check:
        raise UsageError("the prepared reference was made with other check settings")
    _check_paths(out, src, holdout if reference is None else reference.holdout_path, mapping)
    cohort = _input_cohort(src, limit)
    gen = load(run, device, precision=precision)
    # the input's identifiers, read before anything is written: an unreadable file stops the run here
    needles = identifier_needles(cohort, exclude=[*gen.config.data.channel_names, *gen.network_labels()])
    train_path = reference.train_path if reference is not None else \
        Path(train_cohort) if train_cohort is not None else recorded_train_cohort(gen.run_dir)
    if train_path is None and s.privacy_gate:
        raise UsageError("the run does not record its training cohort; pass --train-cohort PATH (or "
                         "--no-privacy-gate to skip the memorization check)")
    has_holdout = (reference.holdout_path if reference is not None else holdout) is not None
    priv = PrivacyRun()
    store = _manifest_store(out, gen, s, priv, len(cohort.cases), has_holdout, batch_size)
    result = AnonymizeResult(out)
    previous = store.previous.get("privacy") or {}
    gate = None
    if train_path is not None:
        priv.ref = reference or prepare_reference(train_path, s.check, holdout=holdout, feature_weights=feature_weights,
                                                  note=note, shipped=gen.run_dir / SEEDS)
        gate = priv.start(s.gate_linkage, cohort, previous, note, on_attempt, n_volumes=len(cohort.cases) * s.per_case)
        result.privacy_checked = True

    engine = _engine(gen, s, cohort, gate, batch_size, progress)
    ids = outputs.fresh_case_ids(len(cohort.cases) * s.per_case, np.random.default_rng([s.seed, _ID_STREAM]))
    jobs = [Job(ids[i * s.per_case + k], case, k, i) for i, case in enumerate(cohort.cases) for k in range(s.per_case)]
    channels = tuple(gen.config.data.channel_names)
    writer, write_one = _writer(out, s, channels, gen.image_channels, gen.network_labels())

    def write(made: Any) -> dict[str, Any]:
        entry = write_one(made)
        (result.written if made.accepted else result.dropped).append(made.job.key)
        tick()
        return entry

    def fail(job: Any, err: BaseException) -> None:
        if job.case.case_id not in {c for c, _ in result.failed}:
            result.failed.append((job.case.case_id, str(err)))
        store.fail({"id": job.key})
        tick()

    res = engine.run(jobs, write, store=store, on_fail=fail)
    result.resumed = len(res.resumed)
    for _ in res.resumed:
        tick()
    _finish(out, store, writer, cohort, gen, s, priv, previous, mapping, ids, needles)
    return result


def _finish(out: Path, store: Any, writer: Any, cohort: Any, gen: Any, s: AnonymizeSettings, priv: PrivacyRun,
            previous: dict[str, Any], mapping: str | Path | None, ids: list[str], needles: list[str]) -> None:
    """The attacks, dataset.json, the manifest, the privacy report, the mapping (on request), the self-check."""
    from synthkit.privacy.gate_report import attacks_and_notes, write_privacy_report

    entries = store.entries
    priv.attacks, priv.not_computed = attacks_and_notes(entries, priv.ref, gen, s.check.seed, previous)
    store.finish(then=lambda doc: writer.finish(
        sum(e["status"] == "ok" for e in entries.values()), name="synthkit synthetic cohort",
        description="Synthetic images generated by synthkit (Med-DDPM); see manifest.json"))
    extractor = priv.ref.checker.extractor if priv.ref is not None else None
    write_privacy_report(out, entries, priv.calibration, s.check, extractor, priv.ref, priv.attacks, priv.not_computed)
    if mapping is not None:
        pairs = {case.case_id + (f"#{k}" if s.per_case > 1 else ""): ids[i * s.per_case + k]
                 for i, case in enumerate(cohort.cases) for k in range(s.per_case)
                 if ids[i * s.per_case + k] in entries}
        outputs.write_mapping(mapping, out, pairs)
    # ``needles``: the input's identifiers less what the output carries by design (the model's
    # channel and label names), collected before generation
    written_names = [*gen.config.data.channel_names, *gen.network_labels()]
    needles = list(needles)
    if priv.ref is not None:  # training and holdout ids too (short all-digit ones are too common to search)
        skip = {n.lower() for n in written_names}
        needles += [c for c in priv.ref.case_ids()
                    if c.lower() not in skip and (len(c) >= LONG_NEEDLE or not c.isdigit())]
    hits = identifiers.scan_for_identifiers(out, needles)
    if hits:
        where = sorted({str(h.path.relative_to(out)) for h in hits})[:5]
        raise outputs.DeidError(f"self-check found {len(hits)} input identifier(s) in the output "
                             f"(e.g. in {', '.join(where)}); do not share it", out)
