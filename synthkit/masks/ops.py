"""The operations' front door: parse op specs, draw valid parameters, apply, replay.

An op spec is ``name`` or ``name:key=value,key=value`` (options of that operation's options
dataclass, e.g. ``move:elastic=1.5,per_component=true``); several specs joined with ``+`` (or
given as a list) are applied in order, each to the previous result.

:func:`sample_valid` draws parameters, applies them, and draws again while an invariant is
broken (:class:`ConstraintViolation`), at most ``max_tries`` times; then :class:`MaskOpError`
with the last reason. The generator is consumed in a fixed order, so a seed gives the same
parameters and the same mask, bit for bit. :func:`apply` is the deterministic twin.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from synthkit.errors import UsageError

# The built-in operations: importing a module registers its ``OPERATION``. A new operation is
# one module (``synthkit/masks/<name>.py`` ending in ``OPERATION = register(Operation(...))``,
# importing only params / constraints / geometry / objects, never this module) plus its name here.
from synthkit.masks import deform, move, place, remove, template, transplant  # noqa: F401
from synthkit.masks.constraints import ConstraintViolation, MaskOpError
from synthkit.masks.context import SampleContext
from synthkit.masks.params import Operation, OpParams, from_dict, parse_options, registered, to_dict

DEFAULT_MAX_TRIES = 20


def get_operation(name: str) -> Operation:
    """The operation called ``name``; ``UsageError`` listing the known names otherwise."""
    try:
        return registered()[name]
    except KeyError:
        raise UsageError(f"unknown mask operation {name!r}; choose from {', '.join(operations())}") from None


def operations() -> list[str]:
    """The names of the registered operations, sorted."""
    return sorted(registered())


def op_name(params: OpParams) -> str:
    """The name of the operation whose parameter class ``params`` is."""
    for op in registered().values():
        if type(params) is op.params_cls:
            return op.name
    raise TypeError(f"{type(params).__name__} is not a registered operation's parameters")


@dataclass(frozen=True)
class OpSpec:
    """One operation by name, with option overrides as strings."""

    name: str
    options: dict[str, str] = field(default_factory=dict)

    def build_options(self) -> Any:
        op = get_operation(self.name)
        return parse_options(op.options_cls, self.options, self.name)


def parse_op_specs(specs: str | Sequence[str | OpSpec] | None) -> list[OpSpec]:
    """``"move+deform:elastic=2"`` or ``["move", "deform:elastic=2"]`` -> validated :class:`OpSpec` list.

    ``None`` or empty -> ``[OpSpec("move")]`` (the default operation)."""
    if specs is None or (not isinstance(specs, str) and len(specs) == 0):
        return [OpSpec("move")]
    items = [specs] if isinstance(specs, str) else list(specs)
    out: list[OpSpec] = []
    for item in items:
        if isinstance(item, OpSpec):
            out.append(item)
            continue
        for part in str(item).split("+"):
            part = part.strip()
            if not part:
                raise UsageError(f"empty operation in --ops {item!r}")
            name, _, rest = part.partition(":")
            opts: dict[str, str] = {}
            for kv in filter(None, (s.strip() for s in rest.split(","))):
                k, eq, v = kv.partition("=")
                if not eq:
                    raise UsageError(f"--ops {part!r}: option {kv!r} must be key=value")
                opts[k.strip()] = v.strip()
            spec = OpSpec(name.strip(), opts)
            spec.build_options()  # validate now: unknown op / option is a usage error up front
            out.append(spec)
    return out


def sample(spec: str | OpSpec, labels: np.ndarray, ctx: SampleContext,
           rng: np.random.Generator) -> OpParams:
    """Draw parameters for one operation (not yet checked against the invariants)."""
    spec = parse_op_specs([spec])[0]
    op = get_operation(spec.name)
    return op.sample(labels, ctx, rng, spec.build_options())


def apply(labels: np.ndarray | Any, params: OpParams) -> np.ndarray | Any:
    """Apply recorded parameters: (D, H, W) integer labels -> (D, H, W), same dtype.

    Also takes a :class:`synthkit.io.Volume` holding a ``(1, D, H, W)`` mask and returns a
    Volume with the same affine. Deterministic; raises :class:`ConstraintViolation` /
    :class:`MaskOpError` if the result would break an invariant or the mask does not fit the
    parameters."""
    if hasattr(labels, "affine") and hasattr(labels, "data"):
        from synthkit.io.volume import Volume

        if labels.data.ndim != 4 or labels.data.shape[0] != 1:
            raise MaskOpError(f"a mask Volume must be (1, D, H, W), got {labels.data.shape}")
        return Volume(data=apply(labels.data[0], params)[None], affine=labels.affine)
    return get_operation(op_name(params)).apply(np.asarray(labels), params)


def apply_chain(labels: np.ndarray | Any, chain: Sequence[OpParams]) -> np.ndarray | Any:
    """Apply several recorded operations in order (array or Volume, as :func:`apply`)."""
    out = labels
    for p in chain:
        out = apply(out, p)
    return out


def sample_valid(spec: str | OpSpec, labels: np.ndarray, ctx: SampleContext, rng: np.random.Generator,
                 max_tries: int = DEFAULT_MAX_TRIES) -> tuple[OpParams, np.ndarray]:
    """Draw parameters until they give a mask that keeps every invariant; (params, result)."""
    spec = parse_op_specs([spec])[0]
    op = get_operation(spec.name)
    options = spec.build_options()
    reason = ""
    for _ in range(max_tries):
        try:
            params = op.sample(labels, ctx, rng, options)
            return params, op.apply(labels, params)
        except ConstraintViolation as e:
            reason = str(e)
    raise MaskOpError(f"{spec.name}: no valid parameters after {max_tries} tries (last: {reason})")


def perturb(labels: np.ndarray, specs: str | Sequence[str | OpSpec] | None, ctx: SampleContext,
            rng: np.random.Generator, max_tries: int = DEFAULT_MAX_TRIES
            ) -> tuple[np.ndarray, list[OpParams]]:
    """Apply a chain of operations with freshly drawn valid parameters; (result, params list)."""
    out = np.asarray(labels)
    chain: list[OpParams] = []
    for spec in parse_op_specs(specs):
        params, out = sample_valid(spec, out, ctx, rng, max_tries)
        chain.append(params)
    return out, chain


def chain_to_json(chain: Sequence[OpParams]) -> list[dict[str, Any]]:
    """``[{"op": name, "params": {...}}, ...]``: the replayable record of a chain."""
    return [{"op": op_name(p), "params": to_dict(p)} for p in chain]


def chain_from_json(items: Any, where: str = "ops") -> list[OpParams]:
    """Inverse of :func:`chain_to_json`; ``ValueError`` on anything malformed."""
    if not isinstance(items, list):
        raise ValueError(f"{where}: expected a list of operations")  # noqa: TRY004 (bad user JSON)
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or set(item) != {"op", "params"}:
            raise ValueError(f"{where}[{i}]: expected {{'op': name, 'params': {{...}}}}")
        try:
            op = get_operation(str(item["op"]))
        except UsageError as e:
            raise ValueError(f"{where}[{i}]: {e}") from None
        out.append(from_dict(op.params_cls, item["params"], f"{where}[{i}].params"))
    return out
