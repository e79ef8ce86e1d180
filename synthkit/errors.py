"""Exceptions that carry a message fit for a user.

Every error the library raises for bad *input* (a file that cannot be read, a cohort with no
cases, a checkpoint that is not one) derives from :class:`SynthkitError`. The CLI prints its
message as one line on stderr and exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations

from pathlib import Path


class SynthkitError(Exception):
    """A user-facing error. ``str(err)`` is a complete, single-line message."""

    exit_code: int = 1

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = Path(path) if path is not None else None
        msg = f"{path}: {message}" if path is not None else message
        super().__init__(msg.replace("\n", " "))


class UsageError(SynthkitError):
    """The command was called wrongly (missing folder, bad option value). Exit code 2."""

    exit_code = 2


class CohortError(SynthkitError):
    """A cohort or one of its files cannot be read or is inconsistent."""


class CheckpointError(SynthkitError):
    """A checkpoint or run folder is missing, corrupt or not what it claims to be."""
