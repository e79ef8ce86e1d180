"""Content hashes of files, read in 1 MiB blocks (a weights file never sits in memory twice).

:func:`file_sha256` is the one SHA-256 of a file in synthkit (weights fingerprints in
manifests and reports, written-volume checksums); :func:`update_from_file` feeds a file into
any ``hashlib`` object (the preprocessing cache keys use BLAKE2).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

CHUNK = 1 << 20


def update_from_file(h: Any, path: str | Path, chunk: int = CHUNK) -> None:
    """Feed the bytes of ``path`` into the hash object ``h`` (anything with ``update``)."""
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)


def file_sha256(path: str | Path, chunk: int = CHUNK) -> str:
    """The SHA-256 of the file's bytes, as 64 hex digits."""
    h = hashlib.sha256()
    update_from_file(h, path, chunk)
    return h.hexdigest()
