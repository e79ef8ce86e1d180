"""Mixed precision of the network calls: detect bfloat16 support and build an autocast context.

On CPUs with native bfloat16 instructions (AVX-512 BF16 or AMX) oneDNN runs 3D convolutions
in bf16 two to three times faster than fp32. On CPUs without them bf16 is emulated and slower,
so ``"auto"`` falls back to fp32 there. Weights stay fp32 (autocast casts per op); the network
returns its output in the input's dtype, so the diffusion maths always runs in fp32.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16", "auto"]


@functools.lru_cache(maxsize=1)
def _cpu_has_native_bf16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # private op missing in this torch build
        pass
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_supported(device: str | torch.device = "cpu") -> bool:
    """Whether bfloat16 autocast is *fast* on ``device`` (native instructions, not emulation)."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if dev.type == "cpu":
        return _cpu_has_native_bf16()
    return False


def resolve_precision(device: str | torch.device, precision: Precision | None) -> str:
    """The precision actually used: ``"bf16"``/``"fp16"`` fall back to ``"fp32"`` where unsupported.

    ``"auto"`` means bf16 where it is fast, else fp32. fp16 is only used on CUDA.
    """
    dev = torch.device(device)
    if precision is None or precision == "fp32":
        return "fp32"
    if precision in ("auto", "bf16"):
        return "bf16" if bf16_supported(dev) else "fp32"
    if precision == "fp16":
        return "fp16" if dev.type == "cuda" and torch.cuda.is_available() else "fp32"
    raise ValueError(f"unknown precision {precision!r}; use fp32, bf16, fp16 or auto")


@contextlib.contextmanager
def autocast_context(
    device: str | torch.device = "cpu", precision: Precision | None = "auto"
) -> Iterator[str]:
    """Context manager running the enclosed ops in ``precision`` (after fallback); yields it.

    >>> with autocast_context("cpu", "bf16") as used:
    ...     y = model(x, t)        # bf16 convs where supported; y has x's dtype
    """
    dev = torch.device(device)
    used = resolve_precision(dev, precision)
    if used == "fp32":
        yield used
        return
    dtype = torch.bfloat16 if used == "bf16" else torch.float16
    with torch.autocast(device_type=dev.type, dtype=dtype):
        yield used


def sampling_precision(requested: str | None, device: str | torch.device) -> str:
    """The precision ``--precision requested`` samples in on ``device``: ``fp32`` (also for None);
    ``bf16`` where it is native, else ``fp32`` (the caller says so); ``fp16`` on CUDA only: a
    one-line :class:`~synthkit.errors.UsageError` anywhere else (CPU autocast has no fp16 path)."""
    from synthkit.errors import UsageError

    text = "fp32" if requested is None else str(requested)
    if text not in ("fp32", "bf16", "fp16"):
        raise UsageError(f"--precision {text!r}: choose fp32, bf16 or fp16")
    if text == "fp16" and torch.device(device).type != "cuda":
        raise UsageError(f"--precision fp16 needs a CUDA GPU (--device cuda), not {device}; use bf16 or fp32")
    return resolve_precision(device, text)
