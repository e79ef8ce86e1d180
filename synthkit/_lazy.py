"""Lazy public names for packages: ``__getattr__ = lazy_getattr(__name__, _API)`` and
``__dir__ = lazy_dir(__all__)``.

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


def lazy_dir(names: Iterable[str]) -> Callable[[], list[str]]:
    """A module ``__dir__`` listing the package's public (lazy) ``names``."""
    listed = list(names)

    def __dir__() -> list[str]:
        return listed

    return __dir__
