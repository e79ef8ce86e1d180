"""The manifest of a synthesis run, and resuming from it: one place for every command.

A manifest is a JSON document with an *identity* (the keys that say which run made it, e.g.
``{"settings": {...}}`` with the model hash and sampler settings) and a list of entries, one per
finished volume. :class:`ManifestStore` keeps the entries by key and:

* on start, takes over the entries of an earlier run with the same identity whose files are
  all still on disk (the interrupted run resumes; anything else is made again);
* single process: rewrites the whole document atomically after every entry, so that it is
  always complete and consistent with the files on disk;
* under DDP: each rank writes its own part ``.manifest.rank{r}.json``; :meth:`finish` merges
  them on rank 0 into the document (and removes the parts).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any

from synthkit.io.atomic import write_json

Document = Callable[[list[dict[str, Any]], list[dict[str, Any]]], dict[str, Any]]


def read_json_object(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; None when missing; ``{}`` when unreadable or not an object."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class ManifestStore:
    """Entries of one synthesis run, keyed by ``key(entry)``.

    ``identity``: keys the document must carry with equal values for its entries to be taken
    over. ``files(entry)``: the entry's files relative to the folder (an entry is done when all
    exist; an entry with none, e.g. a dropped volume, is done). ``entries_key``: where the
    document lists them. ``document(entries, failures)``: the full document (entries sorted by
    key); it must carry ``identity``. ``on_other(old)``: called when a manifest of another
    identity is there (e.g. to refuse); default: start afresh. ``dist``: a
    :class:`synthkit.runtime.ddp.DistInfo` or None.
    """

    def __init__(self, path: str | Path, identity: dict[str, Any], *, key: Callable[[dict[str, Any]], Hashable],
                 files: Callable[[dict[str, Any]], list[str]], document: Document, entries_key: str = "items",
                 on_other: Callable[[dict[str, Any]], None] | None = None, dist: Any = None):
        from synthkit.runtime.ddp import DistInfo

        self.path = Path(path)
        self.root = self.path.parent
        self.identity = dict(identity)
        self.key, self.files, self._document = key, files, document
        self.entries_key = entries_key
        self.dist = dist or DistInfo()
        self.entries: dict[Hashable, dict[str, Any]] = {}
        self.failures: list[dict[str, Any]] = []
        self.previous: dict[str, Any] = {}  # the earlier document of the same identity, if any
        self._load(on_other)

    # ------------------------------------------------------------------ resume
    def _matches(self, doc: dict[str, Any]) -> bool:
        return all(doc.get(k) == v for k, v in self.identity.items())

    def _parts(self) -> list[Path]:
        return sorted(self.root.glob(".manifest.rank*.json"))

    def _take(self, entries: Any) -> None:
        for e in entries if isinstance(entries, list) else []:
            try:
                k = self.key(e)
                done = all((self.root / f).is_file() for f in self.files(e))
            except (KeyError, TypeError, ValueError):
                continue
            if done:
                self.entries[k] = e

    def _load(self, on_other: Callable[[dict[str, Any]], None] | None) -> None:
        old = read_json_object(self.path)
        if old is not None:
            if self._matches(old):
                self.previous = old
                self._take(old.get(self.entries_key))
            elif on_other is not None:
                on_other(old)
        for p in self._parts():
            part = read_json_object(p) or {}
            if part.get("identity") == self.identity:
                self._take(part.get("entries"))

    def done(self, key: Hashable) -> bool:
        return key in self.entries

    # ------------------------------------------------------------------ record
    @property
    def _part_path(self) -> Path:
        return self.root / f".manifest.rank{self.dist.rank}.json"

    def _save(self) -> None:
        if self.dist.distributed:
            write_json(self._part_path, {"identity": self.identity, "entries": list(self.entries.values()),
                                         "failures": self.failures})
        else:
            write_json(self.path, self.document())

    def add(self, entry: dict[str, Any]) -> None:
        """Record a finished volume (its files are on disk) and save."""
        self.entries[self.key(entry)] = entry
        self._save()

    def fail(self, record: dict[str, Any]) -> None:
        """Record a failure (kept for this run's document only; a rerun tries again) and save."""
        if record not in self.failures:
            self.failures.append(record)
        self._save()

    def document(self) -> dict[str, Any]:
        doc = self._document([self.entries[k] for k in sorted(self.entries)], list(self.failures))
        missing = [k for k in self.identity if k not in doc]
        if missing:
            raise ValueError(f"the manifest document lacks its identity key(s) {missing}")
        return doc

    def finish(self, then: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
        """Merge the ranks' parts (DDP), write the document, call ``then(document)`` on rank 0;
        returns the document (``{}`` on other ranks)."""
        from synthkit.runtime.ddp import barrier

        if self.dist.distributed:
            self._save()
        barrier(self.dist)
        doc: dict[str, Any] = {}
        if self.dist.is_main:
            for p in self._parts():
                part = read_json_object(p) or {}
                if part.get("identity") == self.identity and p != self._part_path:
                    self._take(part.get("entries"))
                    self.failures += [f for f in part.get("failures", []) if f not in self.failures]
            doc = self.document()
            write_json(self.path, doc)
            for p in self._parts():
                p.unlink(missing_ok=True)
            if then is not None:
                then(doc)
        barrier(self.dist)
        return doc
