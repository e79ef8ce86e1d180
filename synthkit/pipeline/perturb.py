"""The engine's optional mask step: :mod:`synthkit.masks` operations on each job's mask.

Deterministic per job: the ``rng(job)`` rule seeds the parameter draw from what the job is (a
copy number, an output id), never from its batch or rank, and the drawn parameters are
returned (``info["ops"]``, replayable with :func:`synthkit.masks.ops.chain_from_json`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


@dataclasses.dataclass
class MaskPerturbation:
    """``perturb(job, mask) -> (perturbed mask Volume (1, D, H, W) int16, {"ops": chain})``.

    ``ops``: operation specs (``"move+deform:elastic=2"`` or a parsed list); ``rng(job)``: the
    job's parameter generator; ``labels``: the cohort's label names (roles); ``tumour_labels``
    / ``head_labels``: explicit roles; ``donors``: a donor pool (``transplant``);
    ``case_id(job)``: the source case id given to the operations (None: not given). The mask's
    affine goes to the operations too (``template`` places its pool head in world coordinates).
    """

    ops: Any
    rng: Callable[[Any], np.random.Generator]
    labels: dict[str, int] = dataclasses.field(default_factory=dict)
    tumour_labels: Sequence[str | int] | None = None
    head_labels: Sequence[str | int] | None = None
    donors: Any = None
    case_id: Callable[[Any], str] | None = None

    def __post_init__(self) -> None:
        from synthkit.masks.ops import parse_op_specs

        self.specs = parse_op_specs(self.ops)

    def __call__(self, job: Any, mask: Any) -> tuple[Any, dict[str, Any]]:
        from synthkit.io.volume import Volume
        from synthkit.masks.context import SampleContext
        from synthkit.masks.labels import resolve_roles
        from synthkit.masks.ops import chain_to_json, perturb

        labels = mask.data[0]
        roles = resolve_roles(self.tumour_labels, self.head_labels, self.labels, np.unique(labels).tolist())
        ctx = SampleContext(roles=roles, spacing=tuple(float(v) for v in mask.spacing),
                            case_id=self.case_id(job) if self.case_id is not None else "", donors=self.donors,
                            affine=mask.affine)
        new, chain = perturb(labels, self.specs, ctx, self.rng(job))
        return Volume(np.asarray(new, dtype=np.int16)[None], mask.affine), {"ops": chain_to_json(chain)}
