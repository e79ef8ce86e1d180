"""Shared helpers for the model benchmarks: thread setup, interleaved timing, tables, JSON.

The benchmark machines are shared and noisy, so comparisons are timed *interleaved* (one run of
each variant per round) and we report the minimum (least disturbed) and the median of rounds.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
REPO = Path(__file__).resolve().parent.parent


def setup_threads(n: int) -> None:
    """Pin torch's intra-op (and inter-op) thread counts."""
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


def environment(threads: int) -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    from synthkit.runtime.precision import bf16_supported

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "logical_cpus": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "bf16_native": bf16_supported("cpu"),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "mkldnn_bf16_supported": _mkldnn_bf16(),
        "python": platform.python_version(),
    }


def _mkldnn_bf16() -> bool | None:
    """oneDNN's own answer to "does this CPU run bf16 natively" (None where torch cannot tell)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return None


def time_interleaved(
    fns: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1
) -> dict[str, dict[str, float]]:
    """Time each callable ``repeats`` times, round-robin.

    Returns {name: {min_s, median_s, cpu_min_s, repeats}}: wall-clock minimum and median, and
    the minimum process CPU time (all threads), which a loaded machine disturbs much less.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            c0, t0 = time.process_time(), time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {
        k: {
            "min_s": min(v),
            "median_s": statistics.median(v),
            "cpu_min_s": min(cpu[k]),
            "repeats": len(v),
        }
        for k, v in times.items()
    }


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A GitHub-markdown table (numbers formatted by the caller)."""
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in cells)])


def write_results(name: str, payload: dict[str, Any], table: str | None = None) -> Path:
    """Write ``results/<name>.json`` (and ``<name>.md`` with the table), atomically."""
    from synthkit.io.atomic import write_json, write_text

    path = write_json(RESULTS / f"{name}.json", payload)
    if table is not None:
        write_text(RESULTS / f"{name}.md", table + "\n")
    return path


def peak_rss_subprocess(code: str, timeout: float = 600) -> dict[str, Any]:
    """Run ``code`` in a fresh Python; it must print one JSON line last. Returns that dict.

    Use ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` inside ``code`` (KiB on Linux): torch's
    allocations are invisible to tracemalloc but not to the kernel's peak resident set size.
    """
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run(
        [sys.executable, "-c", code],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"memory probe failed:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def fmt_s(x: float) -> str:
    return f"{x:.3f}" if x < 10 else f"{x:.1f}"
