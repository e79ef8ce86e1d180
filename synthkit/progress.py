"""Progress reporting shared by the library's long loops.

A library function that takes ``progress`` accepts either a rich ``Progress`` (a task is added
to it) or a plain callable ``(done, total)``, or ``None`` for silence.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def progress_hook(progress: Any, total: int, description: str) -> Callable[[], None]:
    """A function to call once per finished item."""
    if progress is None:
        return lambda: None
    if hasattr(progress, "add_task"):
        task = progress.add_task(description, total=total)
        return lambda: progress.advance(task)
    done = [0]

    def step() -> None:
        done[0] += 1
        progress(done[0], total)

    return step
