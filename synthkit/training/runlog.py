"""``log.jsonl``: one JSON object per optimizer step, appended and flushed as training runs.

Each line: ``{"step": int (1-based, completed steps), "loss": float, "lr": float,
"time": float (seconds of training so far, summed over resumed sessions),
"images_per_s": float, ...}``. On resume, lines past the checkpoint's step (written by a
session that was killed before its next checkpoint) are dropped first, so the log always
describes exactly one history.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from synthkit.io.atomic import write_text


class RunLog:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fh = None

    def truncate_after(self, step: int) -> None:
        """Keep only records with ``step <= step`` (atomic rewrite; tolerates a torn last line)."""
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut short by kill -9
            if isinstance(rec, dict) and int(rec.get("step", 0)) <= step:
                kept.append(line)
        write_text(self.path, "".join(x + "\n" for x in kept))

    def write(self, record: dict[str, Any]) -> None:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "a", encoding="utf-8")  # noqa: SIM115  (kept open for the run)
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in record.items()}
        self._fh.write(json.dumps(clean) + "\n")
        self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def read_log(path: str | Path) -> list[dict[str, Any]]:
    """All complete records of a ``log.jsonl`` (a torn last line is skipped)."""
    out = []
    for line in Path(path).read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out
