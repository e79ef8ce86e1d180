"""Keep freed memory in the process instead of handing it back to the kernel after every call.

Sampling and checking 128^3 volumes on the CPU allocates and frees buffers of tens to hundreds of
megabytes many times per volume. glibc's malloc serves every block above its mmap threshold
(at most 32 MB by default) with a fresh ``mmap`` and gives it back on ``free``, so each new
buffer is faulted in page by page again: on the demo's anonymize stage that was about 9 of its
53 CPU-seconds, all kernel time. :func:`keep_freed_memory` raises the mmap and trim thresholds
(``mallopt``), so freed blocks stay in the heap and are reused; the numbers computed are the same,
the peak memory a little higher (+0.15 GiB on that stage). It is called by the CLI commands that
generate volumes, never on import; a no-op where the C library is not glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_THRESHOLD = 8 << 30  # bytes: no block this process allocates is mmapped or trimmed on its own


@functools.cache
def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (see the module text); True when it took effect."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    big = min(_THRESHOLD, 2**31 - 1)
    ok = bool(mallopt(_M_MMAP_THRESHOLD, big)) and bool(mallopt(_M_TRIM_THRESHOLD, big))
    mallopt(_M_TOP_PAD, 64 << 20)
    return ok
