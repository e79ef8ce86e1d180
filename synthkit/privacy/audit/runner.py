"""``synthkit privacy`` as a library call: read the cohorts, run the memorization check and
the attacks (linkage, loss-based membership inference), write the JSON and the HTML report.

    result, pairs = audit("data/train", "synthetic/", holdout="data/holdout")
    write_json("privacy.json", result.to_dict())
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.errors import SynthkitError, UsageError
from synthkit.privacy.audit.check import CheckSettings, MemorizationChecker
from synthkit.privacy.audit.volumes import (
    FeatureExtractor,
    Item,
    PrivacyResult,
    VolumeSet,
    prepare_set,
    with_features,
)


def cohort_items(cohort: Any, on_error: Callable[[str, str], None], on_case: Callable[[], None] | None = None
                 ) -> Iterator[Item]:
    """(id, image (C, D, H, W), affine, labels (1, D, H, W) or None) for every readable case.

    A mask that is missing, unreadable or on another grid is simply not used (the head is then
    found from the image alone); an unreadable image is reported through ``on_error``.
    """
    from synthkit.io import read_image, read_mask

    for case in cohort.cases:
        try:
            img = read_image(case)
        except SynthkitError as e:
            on_error(case.case_id, str(e))
            if on_case:
                on_case()
            continue
        labels = None
        if case.mask is not None:
            try:
                m = read_mask(case)
                if m.data.shape[1:] == img.data.shape[1:]:
                    labels = m.data
            except SynthkitError:
                labels = None
        if on_case:
            on_case()
        yield case.case_id, img.data, img.affine, labels


def make_extractor(feature_weights: str | Path | None, *, seed: int = 0, features: str | None = None,
                   device: str = "cpu") -> FeatureExtractor:
    """The feature space of the check: MedicalNet from ``feature_weights`` (or
    ``$SYNTHKIT_MEDICALNET_WEIGHTS``), else the pretrained deepbet encoder (so the feature rule
    flags); ``features`` picks explicitly, as ``synthkit evaluate --features`` does."""
    from synthkit.metrics.extractors import make_extractor as metrics_extractor
    from synthkit.privacy.audit.features import FeatureSpace

    return FeatureSpace(metrics_extractor(feature_weights, seed=seed, device=device, features=features))


def load_set(path: str | Path, what: str, settings: CheckSettings, extractor: FeatureExtractor | None, *,
             errors: list[dict[str, str]], strict: bool = False,
             on_case: Callable[[], None] | None = None, mirrored: bool = False) -> VolumeSet:
    """Discover and prepare one cohort; per-case problems go to ``errors`` (or raise with ``strict``).
    ``mirrored``: also the features of the mirrored volumes (a training set: :func:`~synthkit.privacy.audit.volumes.with_features`)."""
    from synthkit.io import discover_cohort

    cohort = discover_cohort(path)

    def on_error(case_id: str, message: str) -> None:
        if strict:
            raise SynthkitError(f"{what} case {case_id}: {message}")
        errors.append({"set": what, "case": case_id, "error": message})

    def on_prep_error(case_id: str, exc: Exception) -> None:
        on_error(case_id, f"cannot compare ({exc})")

    vs = prepare_set(cohort_items(cohort, on_error, on_case), settings, extractor, on_error=on_prep_error,
                     mirrored=mirrored)
    if len(vs) == 0:
        raise UsageError(f"no usable volumes in the {what} cohort", path)
    return vs


def count_cases(path: str | Path) -> int:
    from synthkit.io import discover_cohort

    return len(discover_cohort(path).cases)


def training_side(train: str | Path, holdout: str | Path | None, settings: CheckSettings,
                  extractor: FeatureExtractor | None, *, errors: list[dict[str, str]], strict: bool = False,
                  on_case: Callable[[], None] | None = None, seed: Any = None) -> MemorizationChecker:
    """Read and prepare the training cohort (and ``holdout``) and build the checker on them: the
    part of a check that is the same for every synthetic set (see :func:`cached_training_side`).
    ``seed``: a shipped :class:`~synthkit.privacy.audit.reference_seed.Seed` for this cohort
    (no holdout): its features and alignments are used when the prepared volumes match it."""
    if seed is not None and holdout is None:
        tr = load_set(train, "training", settings, None, errors=errors, strict=strict, on_case=on_case)
        checker = seed.restore(tr, settings, extractor)
        if checker is not None:
            return checker
        tr = with_features(tr, extractor if settings.use_features else None, mirrored=True)
    else:
        tr = load_set(train, "training", settings, extractor, errors=errors, strict=strict, on_case=on_case,
                      mirrored=True)
    ho = None
    if holdout is not None:
        ho = load_set(holdout, "holdout", settings, extractor, errors=errors, strict=strict, on_case=on_case)
    if ho is None and len(tr) < 4:
        raise UsageError("without --holdout the training cohort needs at least 4 readable volumes "
                         "(train-to-train leave-one-out distances calibrate the flag)", train)
    if ho is not None and len(ho) < 3:
        raise UsageError("the holdout cohort needs at least 3 readable volumes to calibrate the flag", holdout)
    try:
        return MemorizationChecker(tr, ho, settings, extractor)
    except ValueError as e:
        raise UsageError(str(e), train) from None


def cached_training_side(train: str | Path, holdout: str | Path | None, settings: CheckSettings,
                         extractor: FeatureExtractor | None, *, errors: list[dict[str, str]], strict: bool = False,
                         on_case: Callable[[], None] | None = None, cache: bool | str | Path = True,
                         device: str = "cpu") -> MemorizationChecker:
    """:func:`training_side` through the reference cache (:mod:`synthkit.privacy.audit.reference_cache`:
    by the contents of the cohorts; ``cache`` True: synthkit's cache folder, a path: that folder,
    False: computed). An entry made while some training/holdout case could not be read is
    computed again, so that ``errors`` names those cases."""
    from synthkit.io import discover_cohort
    from synthkit.privacy.audit.reference_cache import load_checker

    def compute(key: str | None = None) -> tuple[MemorizationChecker, dict[str, int], int]:
        return training_side(train, holdout, settings, extractor, errors=errors, strict=strict, on_case=on_case), {}, \
            len(errors)

    if cache is False:
        return compute()[0]
    cohorts = [discover_cohort(train), discover_cohort(holdout) if holdout is not None else None]

    def skip_cases() -> None:  # a hit reads no case: the progress still counts them
        for _ in range(sum(len(c.cases) for c in cohorts if c is not None) if on_case is not None else 0):
            on_case()

    entry = load_checker(cohorts[0], cohorts[1], settings, extractor, compute, on_hit=skip_cases,
                         folder=None if cache is True else Path(cache), device=device)
    if entry.n_errors and not errors:
        store = entry.checker.calibration_store
        entry.checker = compute()[0]
        entry.checker.calibration_store = store
    return entry.checker


def audit(
    train: str | Path,
    synth: str | Path,
    holdout: str | Path | None = None,
    *,
    settings: CheckSettings | None = None,
    feature_weights: str | Path | None = None,
    strict: bool = False,
    on_case: Callable[[], None] | None = None,
    sources: str | Path | None = None,
    model: str | Path | None = None,
    device: str = "cpu",
    cache: bool | str | Path = True,
) -> tuple[PrivacyResult, dict[str, tuple[np.ndarray, np.ndarray]]]:
    """Check every volume of the cohort ``synth`` against the cohort ``train`` (calibrated on
    ``holdout`` if given, else train-to-train), then run the attacks (:func:`run_attacks`):
    linkage with the synthetic->source links (``sources``: a sidecar; default: found in
    ``synth``), loss-based membership inference with the run ``model`` (needs ``holdout``).
    The training side (and the planted-copy self-test) comes from the reference cache when these
    cohorts were checked before (``cache``: see :func:`cached_training_side`).
    Returns the result and, per flagged volume, the aligned (synthetic, training) pair for the
    report. Unreadable cases are listed in ``result.cohort["errors"]`` unless ``strict``."""
    settings = settings or CheckSettings()
    extractor = make_extractor(feature_weights, seed=settings.seed, device=device) if settings.use_features else None
    errors: list[dict[str, str]] = []
    checker = cached_training_side(train, holdout, settings, extractor, errors=errors, strict=strict, on_case=on_case,
                                   cache=cache, device=device)
    sy = load_set(synth, "synthetic", settings, extractor, errors=errors, strict=strict, on_case=on_case)
    try:
        result = checker.run(sy)
    except ValueError as e:
        raise UsageError(str(e)) from None
    result.cohort["errors"] = errors
    run_attacks(result, checker, sy, synth, train=train, holdout=holdout, sources=sources, model=model,
                device=device, errors=errors, strict=strict)
    return result, checker.pairs(sy, result.volumes)


def run_attacks(result: PrivacyResult, checker: MemorizationChecker, synth_set: VolumeSet, synth: str | Path, *,
                train: str | Path, holdout: str | Path | None, sources: str | Path | None, model: str | Path | None,
                device: str = "cpu", errors: list[dict[str, str]] | None = None, strict: bool = False) -> None:
    """Add ``result.attacks["linkage"]`` and ``["membership"]`` (or say in ``not_computed`` why not)."""
    from synthkit.privacy.audit.attacks import linkage_attack, sources_from_ids
    from synthkit.privacy.audit.sources import read_links

    links, how = read_links(synth, synth_set.ids, checker.train.ids, sources)
    src = sources_from_ids(synth_set.ids, checker.train.ids, links)
    if (src >= 0).any():
        link = linkage_attack(checker.similarity_matrices(result.details), src)
        result.attacks["linkage"] = {**link, "links_from": how}
    else:
        result.not_computed.append(f"linkage attack: no synthetic volume has a training case as its source "
                                   f"(links from {how}; give --sources)")
    if model is None:
        result.not_computed.append("membership attack (denoising loss): give --model RUN (and --holdout)")
    elif holdout is None:
        result.not_computed.append("membership attack (denoising loss): needs a holdout set (--holdout)")
    else:
        result.attacks["membership"] = membership_from_run(model, train, holdout, device=device, seed=checker.settings.seed,
                                                           errors=errors, strict=strict)


def membership_from_run(model: str | Path | Any, train: str | Path, holdout: str | Path, *, device: str = "cpu",
                        seed: int = 0, errors: list[dict[str, str]] | None = None, strict: bool = False
                        ) -> dict[str, Any]:
    """Loss-based membership inference of the run ``model`` (a folder or model name, or an
    already loaded pipeline) on the cohorts ``train`` (members) and ``holdout`` (non-members);
    unusable cases go to ``errors`` (or raise with ``strict``)."""
    from synthkit.io import discover_cohort, read_image, read_mask
    from synthkit.privacy.audit.attacks import DenoisingError, case_errors, membership_attack

    err = (DenoisingError.from_loaded(model, seed=seed) if hasattr(model, "diffusion")
           else DenoisingError.from_run(model, device, seed=seed))

    def cases(path: str | Path) -> Iterator[tuple[str, Any, Any]]:
        for case in discover_cohort(path).cases:
            if case.mask is None:
                continue
            try:
                yield case.case_id, read_image(case), read_mask(case)
            except SynthkitError as e:
                note(case.case_id, e)

    def note(case_id: str, e: Exception) -> None:
        if strict:
            raise SynthkitError(f"membership attack, case {case_id}: {e}")
        if errors is not None:
            errors.append({"set": "membership", "case": case_id, "error": str(e)})

    members = case_errors(err, cases(train), note)
    nonmembers = case_errors(err, cases(holdout), note)
    try:
        res = membership_attack(members.values(), nonmembers.values(), seed=seed)
    except ValueError as e:
        raise UsageError(f"membership attack: {e}") from None
    return {**res, "timesteps": list(err.timesteps)}
