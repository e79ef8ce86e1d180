"""``synthkit anonymize``'s privacy section: the attacks on what it made, and the shareable report.

* **Re-identification (linkage)**, from the source ranks the gate recorded for every volume
  whose source is a training subject (:mod:`synthkit.privacy.gate`): top-1 / top-5
  rates against chance 1/N and 5/N with the exact binomial test
  (:func:`synthkit.privacy.audit.attacks.linkage_from_ranks`), for the written volumes (what is
  shared) and for the first attempt of every volume (what the model made before the gate).
* **Membership inference from the loss** with ``--holdout``: the loaded model's denoising error
  on the training cohort (members) vs the holdout cohort (non-members), ROC AUC with a bootstrap
  interval (:func:`synthkit.privacy.audit.membership_from_run`).

Everything here is counts, rates, ranks and booleans: no training, holdout or input case id.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any

from synthkit.errors import SynthkitError, UsageError
from synthkit.privacy.audit.check import CheckSettings
from synthkit.privacy.audit.volumes import PrivacyResult
from synthkit.privacy.gate import LINKS_FROM, RECORD_KEYS, Reference

_NO_REFERENCE = "memorization check and attacks: no training cohort given (--no-privacy-gate without --train-cohort)"
_NOT_BY_ANONYMIZE = ("closer_to_train and the nearest-synthetic membership score: not computed by anonymize "
                     "(it checks one volume at a time); run `synthkit privacy TRAIN OUT --holdout H` for them")


def _ranks(attempts: list[dict[str, Any]]) -> dict[str, list[int]]:
    linked = [a["source_rank"] for a in attempts if isinstance(a.get("source_rank"), dict)]
    names = sorted(set.intersection(*(set(r) for r in linked))) if linked else []
    return {n: [int(r[n]) for r in linked] for n in names}


def linkage_results(entries: Mapping[str, dict[str, Any]], n_train: int) -> dict[str, Any]:
    """``{"linkage": written volumes, "linkage_before_gate": first attempts}`` (each as
    :func:`~synthkit.privacy.audit.attacks.linkage_from_ranks`), or ``{}`` when no volume has a known source."""
    from synthkit.privacy.audit.attacks import linkage_from_ranks

    written = [e["attempts"][-1] for e in entries.values() if e.get("status") == "ok" and e.get("attempts")]
    first = [e["attempts"][0] for e in entries.values() if e.get("attempts")]
    before = _ranks(first)
    if not before:
        return {}
    out = {"linkage_before_gate": {**linkage_from_ranks(before, n_train, n_synthetic=len(first)),
                                   "links_from": LINKS_FROM, "set": "the first attempt of every volume, before the gate"}}
    after = _ranks(written)
    if after:
        out["linkage"] = {**linkage_from_ranks(after, n_train, n_synthetic=len(written)), "links_from": LINKS_FROM,
                          "set": "the written volumes, what is shared"}
    else:
        out["linkage"] = {"n_synthetic": len(written), "n_linked": 0, "statistics": {}, "links_from": LINKS_FROM,
                          "set": "the written volumes, what is shared",
                          "note": "no written volume has a known training source"}
    return out


def _without_path(e: BaseException) -> str:
    """The message of ``e`` without the path a SynthkitError puts first (a path may name someone)."""
    msg, path = str(e), getattr(e, "path", None)
    return msg[len(f"{path}: "):] if path is not None and msg.startswith(f"{path}: ") else msg


def membership_results(gen: Any, ref: Reference, seed: int) -> tuple[dict[str, Any] | None, str | None]:
    """(membership attack record, None) with a holdout set, else (None, why not)."""
    from synthkit.privacy.audit.runner import membership_from_run

    if ref.holdout_path is None:
        return None, ("membership attack (denoising loss): needs a holdout set (--holdout DIR: real cases with "
                      "masks that the model was NOT trained on)")
    errors: list[dict[str, str]] = []
    try:
        res = membership_from_run(gen, ref.train_path, ref.holdout_path, seed=seed, errors=errors)
    except (UsageError, SynthkitError, ValueError, RuntimeError) as e:
        return None, f"membership attack (denoising loss): {_without_path(e)}"
    return {**res, "n_unusable_cases": len(errors)}, None


def attacks_and_notes(entries: Mapping[str, dict[str, Any]], ref: Reference | None, gen: Any, seed: int,
                      previous: dict[str, Any] | None = None) -> tuple[dict[str, Any], list[str]]:
    """The attacks for the manifest and the report, and what was not computed (and why).
    ``previous``: the earlier run's privacy section (its membership result is kept on resume)."""
    if ref is None:
        return {}, [_NO_REFERENCE]
    attacks = linkage_results(entries, ref.n_train)
    notes: list[str] = []
    if not attacks:
        notes.append("re-identification attack: no input case's mask is a training case's mask, so no volume has a "
                     "known source among the training subjects")
    old = ((previous or {}).get("attacks") or {}).get("membership")
    mem, why = (old, None) if old else membership_results(gen, ref, seed)
    if mem is not None:
        attacks["membership"] = mem
    if why:
        notes.append(why)
    notes.append(_NOT_BY_ANONYMIZE)
    notes += [n for n in ref.checker._not_computed()
              if not n.startswith(("closer_to_train", "membership_inference"))]
    return attacks, notes


def _volume_row(oid: str, e: dict[str, Any]) -> dict[str, Any]:
    attempts = e.get("attempts") or []
    last = attempts[-1] if attempts else {}
    prefix = (f"dropped after {len(attempts)} attempt(s): " if e.get("status") == "dropped"
              else (f"accepted at attempt {len(attempts)}; " if len(attempts) > 1 else ""))
    return {"id": oid, **{k: last.get(k) for k in RECORD_KEYS}, "flagged": bool(last.get("flagged")),
            "reidentified": last.get("reidentified"), "source_rank": last.get("source_rank"),
            "reason": prefix + (last.get("reason") or "")}


def write_privacy_report(out: Path, entries: Mapping[str, dict[str, Any]], calibration: dict[str, Any] | None,
                         check: CheckSettings, extractor: Any, ref: Reference | None, attacks: dict[str, Any],
                         not_computed: list[str]) -> Path:
    """``out/privacy_report.html``, shareable (synthetic ids and numbers only)."""
    from synthkit.privacy.audit.report import write_report

    volumes = [_volume_row(oid, entries[oid]) for oid in sorted(entries)]
    cohort = {"n_synthetic": len(volumes), "n_train": ref.n_train if ref else None,
              "n_holdout": len(ref.checker.holdout) if ref and ref.checker.holdout is not None else 0,
              "n_flagged": sum(v["flagged"] for v in volumes),
              "n_dropped": sum(entries[o].get("status") == "dropped" for o in entries)}
    calib = calibration or {"rule": "not run", "reference": "none", "alpha": check.alpha,
                            "thresholds": {}}
    settings = {**asdict(check), "feature_extractor": getattr(extractor, "name", None)}
    result = PrivacyResult(volumes, cohort, calib, settings, list(not_computed), attacks=dict(attacks))
    return write_report(out, result, share=True, title="synthkit anonymize: privacy report")
