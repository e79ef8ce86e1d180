"""Operation parameters and the operation registry (a leaf: imports no operation).

Every mask operation is a pair (torchio's "deterministic twin" design):

* ``sample(labels, ctx, rng, options) -> Params`` draws random parameters from a
  ``numpy.random.Generator``;
* ``apply(labels, params) -> labels`` is a pure, deterministic function of the parameters.

``Params`` are frozen dataclasses that serialise to plain JSON (``to_dict`` / ``from_dict``)
and carry everything ``apply`` needs: the grid they were drawn for (shape, spacing), the label
roles (tumour labels, head labels) and the operation's own numbers. Replaying a sidecar is
``apply(mask, from_dict(cls, d))``: bit-identical output.

Sampling *options* (``--ops move:max_rotation_deg=20``) are a second small frozen dataclass per
operation, parsed from ``key=value`` strings by :func:`parse_options`.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from synthkit import _codec
from synthkit._codec import to_dict
from synthkit.errors import UsageError

__all__ = ["ObjectTransform", "OpParams", "Operation", "from_dict", "parse_options", "register",
           "registered", "to_dict"]


@dataclass(frozen=True, kw_only=True)
class OpParams:
    """Fields shared by all operations' parameters.

    ``shape``/``spacing``: the grid (voxels, mm) the parameters were drawn for; ``apply`` refuses
    another shape. ``tumour_labels``: the label values that form the tumour object (moved as one
    object, sub-labels included). ``head_labels``: the labels that count as head/brain tissue.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    tumour_labels: tuple[int, ...]
    head_labels: tuple[int, ...]


@dataclass(frozen=True)
class ObjectTransform:
    """Where and how one object is placed: its centre lands on ``center`` (output voxels),
    rotated by ``rotation_deg`` (about axes 0, 1, 2), scaled by ``scale`` (volume x scale^3),
    then warped by ``elastic`` control displacements (flat, 3 * grid^3, in voxels) if given."""

    center: tuple[float, float, float]
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    elastic: tuple[float, ...] | None = None
    elastic_grid: int = 4

    def elastic_array(self) -> np.ndarray | None:
        """Control displacements as (3, n, n, n), or None."""
        if self.elastic is None:
            return None
        n = self.elastic_grid
        return np.asarray(self.elastic, dtype=np.float64).reshape(3, n, n, n)


@dataclass(frozen=True)
class Operation:
    """A registered operation: its name, parameter and option classes, sampler and applier."""

    name: str
    params_cls: type[OpParams]
    options_cls: type
    sample: Callable[..., OpParams]
    apply: Callable[..., np.ndarray]
    summary: str


_REGISTRY: dict[str, Operation] = {}


def register(op: Operation) -> Operation:
    """Add ``op`` to the registry (each operation module calls this once, at import)."""
    known = _REGISTRY.get(op.name)
    if known is not None and known.sample.__module__ != op.sample.__module__:
        raise ValueError(f"mask operation {op.name!r} is registered twice")
    _REGISTRY[op.name] = op
    return op


def registered() -> dict[str, Operation]:
    """The operations registered so far, by name. Use :func:`synthkit.masks.ops.get_operation`
    (which imports the built-in operations first) rather than this."""
    return dict(_REGISTRY)


# --- JSON round trip (the one dataclass codec, synthkit._codec) ----------------------------

def from_dict(cls: type, data: dict[str, Any], where: str = "params") -> Any:
    """Rebuild a params dataclass from :func:`to_dict` output; ``ValueError`` for unknown or
    missing keys and wrong types."""
    return _codec.from_dict(cls, data, where, ValueError)


def parse_options(cls: type, items: dict[str, str], op: str) -> Any:
    """Build an options dataclass from ``key=value`` strings (``--ops move:scale_max=1.2``)."""
    hints = typing.get_type_hints(cls)
    kw: dict[str, Any] = {}
    for k, raw in items.items():
        if k not in hints:
            known = ", ".join(f.name for f in dataclasses.fields(cls)) or "none"
            raise UsageError(f"operation {op!r} has no option {k!r} (options: {known})")
        tp = hints[k]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            if raw.lower() in ("none", ""):
                kw[k] = None
                continue
            tp = next(a for a in typing.get_args(tp) if a is not type(None))
        try:
            if tp is bool:
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError
                kw[k] = raw.lower() in ("true", "1", "yes")
            elif tp in (int, float, str):
                kw[k] = tp(raw)
            else:
                raise ValueError
        except ValueError:
            raise UsageError(f"operation {op!r}: option {k}={raw!r} is not a valid {getattr(tp, '__name__', tp)}") from None
    try:
        return cls(**kw)
    except ValueError as e:
        raise UsageError(f"operation {op!r}: {e}") from None
