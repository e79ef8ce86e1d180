"""Mask perturbation: deterministic operations on label maps, each with recorded parameters.

Every operation is ``sample`` (draw parameters from a ``numpy.random.Generator``) plus
``apply`` (a deterministic function of the mask and those parameters)::

    import numpy as np
    from synthkit.masks import SampleContext, resolve_roles, perturb, apply_chain

    roles = resolve_roles(["tumour"], ["head"], {"background": 0, "head": 1, "tumour": 2})
    ctx = SampleContext(roles, spacing=(1.0, 1.0, 1.0))
    moved, params = perturb(labels, "move", ctx, np.random.default_rng(0))   # (D, H, W) int
    assert (apply_chain(labels, params) == moved).all()                     # the replay

Operations: ``move`` (default), ``transplant``, ``remove``, ``place``, ``deform``, ``template``.
Names are imported lazily so ``import synthkit.masks`` stays cheap.
"""

from __future__ import annotations

from synthkit._lazy import lazy_dir, lazy_getattr

_API: dict[str, str] = {
    "OpParams": "synthkit.masks.params",
    "ObjectTransform": "synthkit.masks.params",
    "operations": "synthkit.masks.ops",
    "get_operation": "synthkit.masks.ops",
    "LabelRoles": "synthkit.masks.labels",
    "resolve_roles": "synthkit.masks.labels",
    "SampleContext": "synthkit.masks.context",
    "InMemoryDonors": "synthkit.masks.context",
    "MaskOpError": "synthkit.masks.constraints",
    "ConstraintViolation": "synthkit.masks.constraints",
    "OpSpec": "synthkit.masks.ops",
    "parse_op_specs": "synthkit.masks.ops",
    "sample": "synthkit.masks.ops",
    "apply": "synthkit.masks.ops",
    "apply_chain": "synthkit.masks.ops",
    "sample_valid": "synthkit.masks.ops",
    "perturb": "synthkit.masks.ops",
    "chain_to_json": "synthkit.masks.ops",
    "chain_from_json": "synthkit.masks.ops",
    "MoveParams": "synthkit.masks.move",
    "TransplantParams": "synthkit.masks.transplant",
    "RemoveParams": "synthkit.masks.remove",
    "PlaceParams": "synthkit.masks.place",
    "DeformParams": "synthkit.masks.deform",
    "TemplateParams": "synthkit.masks.template",
    "PerturbReport": "synthkit.masks.pipeline",
    "perturb_cohort": "synthkit.masks.pipeline",
    "read_sidecar": "synthkit.masks.pipeline",
    "replay_sidecar": "synthkit.masks.pipeline",
}

__all__ = [*sorted(_API)]  # noqa: PLE0604 (the lazy names are the keys of _API)


__getattr__ = lazy_getattr(__name__, _API)

__dir__ = lazy_dir(__all__)
