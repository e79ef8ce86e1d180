"""Frozen dataclasses to plain JSON and back, refusing anything the class does not declare.

One codec for every JSON file synthkit reads into a dataclass: run configs
(:mod:`synthkit.config`) and mask-operation parameters (:mod:`synthkit.masks.params`).

* :func:`to_dict`: a dataclass (nested dataclasses, tuples, dicts, numpy scalars) as plain
  JSON types (tuples become lists, numpy scalars Python numbers).
* :func:`from_dict`: the inverse, driven by the class's type hints. Unknown keys, missing
  required keys, a wrong type, a tuple of the wrong length or a value outside a ``Literal``
  raise ``error`` (``ValueError`` unless the caller names its own class) with the dotted path
  of the offending field, e.g. ``config.json.model.channel_mults: expected a list``.

Ints are accepted where floats are declared (JSON has one number type); a float with an
integer value is accepted where an int is declared; booleans are never numbers.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain-JSON form of a dataclass instance (recursively)."""
    if not (dataclasses.is_dataclass(obj) and not isinstance(obj, type)):
        raise TypeError(f"expected a dataclass instance, got {type(obj).__name__}")
    return _plain(obj)


def _plain(v: Any) -> Any:
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, np.ndarray):
        return _plain(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    return v


def from_dict(cls: type[T], data: Any, where: str = "config",
              error: type[Exception] = ValueError) -> T:
    """Build dataclass ``cls`` from :func:`to_dict` output; anything malformed raises ``error``.

    ``where`` prefixes every message (a file name, or a path into a bigger document)."""
    if not isinstance(data, dict):
        raise error(f"{where}: expected an object, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        raise error(f"{where}: unknown keys {', '.join(map(str, unknown))} for {cls.__name__}")
    kw = {k: _coerce(hints[k], v, f"{where}.{k}", error) for k, v in data.items()}
    # a key missing from a file written before the option existed takes the value that gave the
    # old behaviour, not today's default (``_LEGACY_DEFAULTS`` on the class, field -> value)
    for k, v in getattr(cls, "_LEGACY_DEFAULTS", {}).items():
        kw.setdefault(k, v)
    try:
        return cls(**kw)
    except (TypeError, ValueError) as e:
        raise error(f"{where}: {e}") from None


def _coerce(tp: Any, v: Any, where: str, error: type[Exception]) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if v is None and type(None) in args:
            return None
        arms = [a for a in args if a is not type(None)]
        first: Exception | None = None
        for a in arms:
            try:
                return _coerce(a, v, where, error)
            except error as e:
                first = first or e
        assert first is not None
        raise first
    if origin is typing.Literal:
        if v not in args or isinstance(v, bool) != any(isinstance(a, bool) for a in args):
            raise error(f"{where}: expected one of {', '.join(map(repr, args))}, got {v!r}")
        return v
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        return from_dict(tp, v, where, error)
    if origin is tuple or tp is tuple:
        return _tuple(args, v, where, error)
    if origin is dict or tp is dict:
        if not isinstance(v, dict):
            raise error(f"{where}: expected an object, got {type(v).__name__}")
        val = args[1] if len(args) == 2 else Any
        return {k: _coerce(val, x, f"{where}.{k}", error) for k, x in v.items()}
    if tp is float:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise error(f"{where}: expected a number, got {v!r}")
        return float(v)
    if tp is int:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v:
            raise error(f"{where}: expected an integer, got {v!r}")
        return int(v)
    if tp is bool:
        if not isinstance(v, bool):
            raise error(f"{where}: expected true/false, got {v!r}")
        return v
    if tp is str:
        if not isinstance(v, str):
            raise error(f"{where}: expected a string, got {v!r}")
        return v
    return v


def _tuple(args: tuple[Any, ...], v: Any, where: str, error: type[Exception]) -> tuple[Any, ...]:
    if not isinstance(v, (list, tuple)):
        raise error(f"{where}: expected a list, got {v!r}")
    if not args:
        return tuple(v)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_coerce(args[0], x, where, error) for x in v)
    if len(v) != len(args):
        raise error(f"{where}: expected {len(args)} values, got {len(v)}")
    return tuple(_coerce(a, x, where, error) for a, x in zip(args, v, strict=True))
