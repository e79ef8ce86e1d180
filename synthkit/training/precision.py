"""Mixed precision for training: the autocast dtype, the loss scaler, and a note on fallback.

Support detection is :func:`synthkit.runtime.precision.resolve_precision` (bf16 only where
the CPU/GPU runs it natively, fp16 only on CUDA). Here we add what the loop needs:

* ``fp32``: no autocast.
* ``bf16``: autocast to bfloat16 (no scaler needed: bf16 has fp32's exponent range).
* ``fp16``: autocast to float16 with a ``GradScaler`` (CUDA only).

When the request cannot be honoured the run continues in fp32 and ``note`` says why.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from synthkit.errors import UsageError

_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    requested: str
    used: str             # "fp32" | "bf16" | "fp16"
    device_type: str      # "cpu" | "cuda"
    note: str | None = None

    @property
    def dtype(self) -> torch.dtype | None:
        return _DTYPES[self.used]

    @property
    def use_scaler(self) -> bool:
        return self.used == "fp16"

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.dtype)

    def make_scaler(self):
        return torch.amp.GradScaler("cuda") if self.use_scaler else None


def resolve_training_precision(requested: str, device: str) -> Precision:
    from synthkit.runtime.precision import resolve_precision

    if requested not in _DTYPES:
        raise UsageError(f"unknown precision {requested!r}; choose fp32, bf16 or fp16")
    device_type = "cuda" if str(device).startswith("cuda") else "cpu"
    used = resolve_precision(device, requested)
    note = None
    if used != requested:
        where = "this GPU" if device_type == "cuda" else "this CPU"
        why = "needs a CUDA GPU" if requested == "fp16" else f"is not natively supported on {where}"
        note = f"{requested} {why}; training in fp32"
    return Precision(requested, used, device_type, note)
