"""Former home of ``synthkit.load``; the names now live in :mod:`synthkit.pipeline` and are
re-exported here so that ``synthkit.run.load`` / ``resolve_run`` / ``seed_for`` / ``Generator``
keep working."""

from __future__ import annotations

from synthkit.pipeline.loading import MODEL_DIRS_ENV, load, resolve_run
from synthkit.pipeline.pipeline import Generator, Pipeline
from synthkit.pipeline.seeds import seed_for
from synthkit.pipeline.weights import file_sha256

__all__ = ["MODEL_DIRS_ENV", "Generator", "Pipeline", "file_sha256", "load", "resolve_run", "seed_for"]
