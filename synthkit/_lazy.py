"""Lazy public names for packages: ``__getattr__ = lazy_getattr(__name__, _API)``.

Importing a synthkit package stays cheap (no torch); a name is imported from its defining
module the first time it is used.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_getattr(package: str, api: Mapping[str, str], modules: Iterable[str] = ()) -> Callable[[str], Any]:
    """A module ``__getattr__`` resolving ``api`` (name -> defining module) and, for names in
    ``modules``, the sub-module ``package.name`` itself."""
    submodules = frozenset(modules)

    def __getattr__(name: str) -> Any:
        if name in api:
            return getattr(importlib.import_module(api[name]), name)
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
