"""Keep freed memory in the process while a job runs, instead of handing it back to the kernel
after every call.

Sampling and checking 128^3 volumes on the CPU allocates and frees buffers of tens to hundreds of
megabytes many times per volume. glibc's malloc serves every block above its mmap threshold
(at most 32 MB by default) with a fresh ``mmap`` and gives it back on ``free``, so each new
buffer is faulted in page by page again: on the demo's anonymize stage that was about 9 of its
53 CPU-seconds, all kernel time. Inside :func:`freed_memory_kept` the mmap and trim thresholds
are raised (``mallopt``), so freed blocks stay in the heap and are reused; the numbers computed
are the same. On leaving, the thresholds go to the values glibc's own adjustment reaches after
the first large block (mmap 32 MB, trim 64 MB) and the heap is trimmed (``malloc_trim``), so the
memory kept goes back and later work allocates as before. A no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_KEEP = 2**31 - 1  # bytes (mallopt takes an int): no block is mmapped or trimmed on its own
_AFTER = {_M_MMAP_THRESHOLD: 32 << 20, _M_TRIM_THRESHOLD: 64 << 20, _M_TOP_PAD: 128 << 10}


@functools.cache
def _libc() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
        libc.malloc_trim.argtypes, libc.malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


@contextmanager
def freed_memory_kept() -> Iterator[bool]:
    """Within the block, freed memory stays in the process (see the module text); yields
    whether that took effect."""
    libc = _libc()
    ok = libc is not None and bool(libc.mallopt(_M_MMAP_THRESHOLD, _KEEP)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, _KEEP))
    if ok:
        libc.mallopt(_M_TOP_PAD, 64 << 20)
    try:
        yield ok
    finally:
        if ok:
            for option, value in _AFTER.items():
                libc.mallopt(option, value)
            libc.malloc_trim(0)
