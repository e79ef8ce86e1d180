"""Progress of the synthesis engine in the terminal: a rich bar on a terminal, else a plain line
every ~10 % (CI logs, pipes), nothing with ``--quiet``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from synthkit.cli._common import err_console


def volume_progress(progress: Any, label: str, quiet: bool = False) -> Callable[[float, int], None] | None:
    """An engine callback ``(done, total)`` in volumes (``done`` fractional within a batch).

    ``progress``: the rich ``Progress`` of :func:`synthkit.cli._common.make_progress`; when it
    is disabled (stderr not a terminal) the callback prints ``synthkit: LABEL: 30% (3/10
    volumes)`` each time another tenth is done.
    """
    if quiet:
        return None
    if progress is not None and not getattr(progress, "disable", True):
        task = progress.add_task(label, total=None)
        return lambda done, total: progress.update(task, completed=done, total=total)
    shown = [0]

    def plain(done: float, total: int) -> None:
        tenth = int(10 * done / total) if total > 0 else 0
        if tenth > shown[0]:
            shown[0] = tenth
            err_console.print(f"synthkit: {label}: {10 * tenth}% ({int(done)}/{total} volumes)", markup=False)

    return plain
