"""Read the tensors of a TorchScript archive without running or compiling any of its code.

A TorchScript file (``torch.jit.save``) is a zip archive: ``<root>/data.pkl`` pickles the module
tree as objects of ``__torch__.*`` classes whose state dicts hold the parameters, each parameter
a ``torch._utils._rebuild_tensor_v2`` call on a storage stored raw as ``<root>/data/<key>``.
``torch.jit.load`` would also compile the archive's ``code/`` (and could run it on ``forward``);
here a restricted unpickler accepts only those few globals, turns every ``__torch__`` object
into a plain attribute holder and rebuilds each tensor from its raw little-endian bytes. Any
other global in the pickle is refused, so nothing in the file can execute.

    state = read_state_dict("model.pt")   # {"init.0.weight": Tensor(16, 1, 7, 7, 7), ...}
"""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch

__all__ = ["TorchScriptReadError", "read_state_dict"]

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class TorchScriptReadError(ValueError):
    """The archive is not a TorchScript file this reader understands (or asks for code)."""


class _ScriptObject:
    """Stand-in for any ``__torch__.*`` class: keeps its pickled state, nothing else."""

    _ts_name = "?"

    def __setstate__(self, state: Any) -> None:
        self.state = state


def _rebuild_tensor(storage: tuple[torch.dtype, torch.Tensor], offset: int, size: tuple, stride: tuple,
                    *_: Any) -> torch.Tensor:
    _dtype, flat = storage
    if not size:
        return flat[offset].clone()
    return torch.as_strided(flat, tuple(size), tuple(stride), offset).clone()


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, storages: dict[str, bytes]):
        super().__init__(io.BytesIO(data))
        self._storages = storages
        self._classes: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module == "__torch__" or module.startswith("__torch__."):
            key = f"{module}.{name}"
            if key not in self._classes:
                self._classes[key] = type(name, (_ScriptObject,), {"_ts_name": key})
            return self._classes[key]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise TorchScriptReadError(f"refusing pickled global {module}.{name}")

    def persistent_load(self, pid: Any) -> tuple[torch.dtype, torch.Tensor]:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise TorchScriptReadError(f"unexpected persistent id {pid!r}")
        _, dtype, key, _location, numel = pid
        if not isinstance(dtype, torch.dtype) or str(key) not in self._storages:
            raise TorchScriptReadError(f"storage {key!r} missing or of unknown type")
        raw = bytearray(self._storages[str(key)])
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        if flat.numel() < int(numel):
            raise TorchScriptReadError(f"storage {key!r} is truncated")
        return dtype, flat


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    state = getattr(obj, "state", None)
    if not isinstance(state, dict):
        return
    for name, value in state.items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _flatten(value, f"{prefix}{name}.", out)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor attribute of the archived module tree, named like ``Module.state_dict()``
    (``"down1.block1.double_conv.0.weight"``). Raises :class:`TorchScriptReadError`."""
    try:
        with zipfile.ZipFile(path) as zf:
            pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkl) != 1:
                raise TorchScriptReadError("no <root>/data.pkl: not a TorchScript archive")
            root = pkl[0][: -len("data.pkl")]
            storages = {n[len(root) + 5:]: zf.read(n) for n in zf.namelist()
                        if n.startswith(root + "data/") and not n.endswith("/")}
            data = zf.read(pkl[0])
    except (OSError, zipfile.BadZipFile) as e:
        raise TorchScriptReadError(f"cannot open archive ({e})") from None
    try:
        top = _Unpickler(data, storages).load()
    except TorchScriptReadError:
        raise
    except Exception as e:  # noqa: BLE001 - any other failure: not an archive we can read
        raise TorchScriptReadError(f"cannot read data.pkl ({type(e).__name__}: {e})") from None
    out: dict[str, torch.Tensor] = {}
    _flatten(top, "", out)
    if not out:
        raise TorchScriptReadError("archive holds no tensors")
    return out
