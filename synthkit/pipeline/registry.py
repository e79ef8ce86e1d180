"""Model kinds: which :class:`~synthkit.pipeline.pipeline.Pipeline` subclass loads and samples a
run, chosen by its ``config.model_type``.

A kind is a ``Pipeline`` subclass decorated with :func:`register_kind`; :func:`kind_class`
finds it. The built-in kinds are listed in :data:`BUILTIN` with the module that registers them,
imported on first use (loading a diffusion run never imports the GAN code). A new kind (the
latent diffusion model, say) is one module::

    @register_kind("latent")
    class LatentPipeline(Pipeline):
        build_network, build_schedule, check_sampling, sample_batch (and from_run, when its
        weights are more than one model.safetensors)

plus its line in :data:`BUILTIN` (or an import of that module before :func:`synthkit.load`).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

from synthkit.errors import UsageError

if TYPE_CHECKING:
    from synthkit.pipeline.pipeline import Pipeline

P = TypeVar("P", bound="type[Pipeline]")

#: model_type -> module whose import registers it.
BUILTIN: dict[str, str] = {
    "ddpm": "synthkit.pipeline.diffusion",
    "pix2pix": "synthkit.pipeline.gan",
    "discogan": "synthkit.pipeline.gan",
    "latent": "synthkit.pipeline.latent",
}

_KINDS: dict[str, type[Pipeline]] = {}


def register_kind(*names: str) -> Callable[[P], P]:
    """Class decorator: ``cls`` serves runs whose ``config.model_type`` is one of ``names``."""
    if not names:
        raise ValueError("register_kind needs at least one model_type name")

    def deco(cls: P) -> P:
        for n in names:
            if _KINDS.get(n, cls) is not cls:
                raise ValueError(f"model kind {n!r} is already registered by {_KINDS[n].__name__}")
            _KINDS[n] = cls
        cls.kinds = tuple(dict.fromkeys((*cls.kinds, *names))) if "kinds" in cls.__dict__ else tuple(names)
        return cls

    return deco


def known_kinds() -> list[str]:
    """Every model_type that :func:`kind_class` can serve, sorted."""
    return sorted(set(BUILTIN) | set(_KINDS))


def kind_class(model_type: str) -> type[Pipeline]:
    """The Pipeline subclass registered for ``model_type``; UsageError (one line) if none is."""
    if model_type not in _KINDS and model_type in BUILTIN:
        importlib.import_module(BUILTIN[model_type])
    try:
        return _KINDS[model_type]
    except KeyError:
        raise UsageError(f"unknown model kind {model_type!r} (known: {', '.join(known_kinds())})") from None
