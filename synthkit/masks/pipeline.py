"""``perturb_cohort``: perturbed copies of every mask in a cohort, each with a replay sidecar.

Output, in ``out/``: ``{case}_{k}.nii.gz`` (k = 0 .. n_per_mask-1) on the source mask's grid
(same shape and affine), and ``{case}_{k}.json``::

    {"format": "synthkit.masks/1", "case": "<source case id>", "index": k, "seed": S,
     "output": "{case}_{k}.nii.gz", "ops": [{"op": "move", "params": {...}}, ...]}

The sidecar holds the cohort's case id and the operation parameters only (no path, no header
field, no hash of the source). ``replay_sidecar`` re-applies the recorded parameters to the
source mask: the result is bit-identical.

Randomness: output ``k`` of case ``c`` uses ``numpy.random.default_rng([seed, key(c), k])``
with ``key`` a stable hash of the case id, so a result depends only on (seed, case, k), not on
the order of the cases or on other cases failing.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.errors import CohortError, SynthkitError, UsageError
from synthkit.masks.context import SampleContext
from synthkit.masks.labels import parse_labels, resolve_roles
from synthkit.masks.ops import (
    DEFAULT_MAX_TRIES,
    OpSpec,
    apply_chain,
    chain_from_json,
    chain_to_json,
    parse_op_specs,
    perturb,
)

SIDECAR_FORMAT = "synthkit.masks/1"


@dataclass
class PerturbReport:
    """What :func:`perturb_cohort` did: files written, and (case id, reason) per failed case."""

    written: list[Path] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    n_cases: int = 0


def case_rng(seed: int, case_id: str, k: int) -> np.random.Generator:
    """The generator for output ``k`` of ``case_id`` (independent of every other output)."""
    key = int.from_bytes(hashlib.sha256(case_id.encode("utf-8")).digest()[:8], "little")
    return np.random.default_rng([int(seed), key, int(k)])


class CohortDonors:
    """A :class:`~synthkit.masks.context.DonorPool` reading masks from a cohort (small LRU cache)."""

    def __init__(self, cohort: Any, cache_size: int = 8):
        self._cases = {c.case_id: c for c in cohort.cases if c.mask is not None and not c.problems}
        self._cache: OrderedDict[str, tuple[np.ndarray, tuple[float, float, float]]] = OrderedDict()
        self._size = cache_size

    def case_ids(self) -> list[str]:
        return list(self._cases)

    def load(self, case_id: str) -> tuple[np.ndarray, tuple[float, float, float]]:
        from synthkit.io import read_mask

        if case_id in self._cache:
            self._cache.move_to_end(case_id)
            return self._cache[case_id]
        vol = read_mask(self._cases[case_id])
        item = (vol.data[0], vol.spacing)
        self._cache[case_id] = item
        if len(self._cache) > self._size:
            self._cache.popitem(last=False)
        return item


def _read_case(cohort: Any, case: Any, donors: CohortDonors | None) -> Any:
    from synthkit.io import read_mask

    if case.problems:
        raise CohortError(f"case {case.case_id}: {'; '.join(case.problems)}")
    vol = read_mask(case)
    if vol.data.shape[0] != 1:
        raise CohortError(f"case {case.case_id}: mask must be 3D, got {vol.data.shape[0]} channels", case.mask)
    return vol


def perturb_cohort(
    masks: str | Path,
    out: str | Path,
    *,
    ops: str | Sequence[str | OpSpec] | None = None,
    n_per_mask: int = 1,
    seed: int = 0,
    tumour_labels: Sequence[str | int] | None = None,
    head_labels: Sequence[str | int] | None = None,
    strict: bool = False,
    max_tries: int = DEFAULT_MAX_TRIES,
    on_case: Callable[[str], None] | None = None,
) -> PerturbReport:
    """Write ``n_per_mask`` perturbed copies of each mask of the cohort/folder ``masks`` to ``out``.

    ``ops``: op specs applied in order (default: ``move``). ``tumour_labels`` / ``head_labels``:
    names or values (see :mod:`synthkit.masks.labels`). A case that fails (unreadable mask, no
    tumour, no valid parameters within ``max_tries``) is recorded in the report and the others
    go on; with ``strict=True`` the first failure is raised. ``on_case(case_id)`` is called
    after each case (for progress bars).
    """
    from synthkit.io import discover_cohort, write_nifti
    from synthkit.io.atomic import write_json

    if n_per_mask < 1:
        raise UsageError(f"--n-per-mask must be >= 1, got {n_per_mask}")
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    specs = parse_op_specs(ops)
    cohort = discover_cohort(masks, need_images=False)
    if tumour_labels:  # a bad --label is a usage error for every case: say so once, up front
        parse_labels(tumour_labels, cohort.labels, "--label")
    if head_labels:
        parse_labels(head_labels, cohort.labels, "--head-label")
    out = Path(out)
    if out.resolve() == Path(cohort.root).resolve():
        raise UsageError("the output folder must differ from the input folder", out)
    out.mkdir(parents=True, exist_ok=True)
    needs_donors = any(s.name == "transplant" for s in specs)
    donors = CohortDonors(cohort) if needs_donors else None
    report = PerturbReport(n_cases=len(cohort.cases))
    for case in cohort.cases:
        try:
            if case.mask is None:
                raise CohortError(f"case {case.case_id}: no mask file")
            vol = _read_case(cohort, case, donors)
            labels = vol.data[0]
            roles = resolve_roles(tumour_labels, head_labels, cohort.labels, np.unique(labels).tolist())
            ctx = SampleContext(roles=roles, spacing=vol.spacing, case_id=case.case_id, donors=donors,
                                affine=vol.affine)
            for k in range(n_per_mask):
                result, chain = perturb(labels, specs, ctx, case_rng(seed, case.case_id, k), max_tries)
                name = f"{case.case_id}_{k}"
                path = write_nifti(out / f"{name}.nii.gz", result, vol.affine, is_label=True)
                write_json(out / f"{name}.json", {
                    "format": SIDECAR_FORMAT, "case": case.case_id, "index": k, "seed": int(seed),
                    "output": path.name, "ops": chain_to_json(chain),
                })
                report.written.append(path)
        except SynthkitError as e:
            if strict:
                raise
            msg = str(e)
            report.failures.append((case.case_id, msg if case.case_id in msg else f"case {case.case_id}: {msg}"))
        finally:
            if on_case is not None:
                on_case(case.case_id)
    return report


def read_sidecar(path: str | Path) -> dict[str, Any]:
    """Load and validate a sidecar; the ``ops`` entry is returned as a list of params objects."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UsageError("no such parameters file", path) from None
    except (OSError, ValueError) as e:
        raise UsageError(f"not a JSON parameters file ({e})", path) from None
    if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT:
        raise UsageError(f"not a synthkit masks sidecar (format must be {SIDECAR_FORMAT!r})", path)
    if not isinstance(data.get("case"), str):
        raise UsageError("sidecar has no source 'case'", path)
    try:
        data["ops"] = chain_from_json(data.get("ops"))
    except ValueError as e:
        raise UsageError(f"bad operation parameters: {e}", path) from None
    return data


def replay_sidecar(sidecar: str | Path, masks: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Re-apply a sidecar's recorded operations to its source case's mask in ``masks``.

    Returns (labels (D, H, W), affine (4, 4)); bit-identical to the original output."""
    from synthkit.io import discover_cohort

    data = read_sidecar(sidecar)
    cohort = discover_cohort(masks, need_images=False)
    try:
        case = cohort.case(data["case"])
    except KeyError:
        raise UsageError(f"case {data['case']!r} of the sidecar is not in this cohort", masks) from None
    vol = _read_case(cohort, case, None)
    return apply_chain(vol.data[0], data["ops"]), vol.affine
