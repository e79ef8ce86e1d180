"""Reading a user's nnU-Net v2 model files without running code from them (for
:mod:`synthkit.metrics.nnunet_segmenter`).

:func:`read_checkpoint` opens ``checkpoint_final.pth`` with ``torch.load(..., weights_only=True)``
only (the numpy number scalars of nnU-Net's training log are rebuilt by stand-ins that make plain
numbers and nothing else); any other pickled object is refused with one line naming the file.
:func:`check_architecture` accepts only ``torch.nn.Module`` classes from the packages nnU-Net
builds its networks from, before ``plans.json``'s class names are imported and called.
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.errors import UsageError


def not_a_model(folder: Path, why: str) -> UsageError:
    return UsageError(
        f"not an nnU-Net v2 model folder ({why}); give the trainer output folder, e.g. "
        "nnUNet_results/Dataset001_X/nnUNetTrainer__nnUNetPlans__3d_fullres",
        folder,
    )

#: nnU-Net's network builder imports and calls the classes ``plans.json`` names (the network,
#: and its conv / norm / dropout / nonlinearity ops, built with keyword arguments from the same
#: file), so a crafted plans.json could make it call anything (``subprocess.Popen``). Only
#: torch.nn modules from these packages are let through.
_ARCH_PACKAGE = "dynamic_network_architectures"
_OP_PACKAGE = "torch.nn"
_OP_KEYS = ("conv_op", "norm_op", "dropout_op", "nonlin")


def check_architecture(folder: Path, config: Any) -> None:
    """Raise UsageError unless the network class and the ops ``plans.json`` names are
    ``torch.nn.Module`` classes from dynamic_network_architectures and torch.nn."""
    arch = config.network_arch_class_name
    kwargs = config.network_arch_init_kwargs
    req = config.network_arch_init_kwargs_req_import
    if not isinstance(kwargs, dict) or not isinstance(req, (list, tuple)):
        raise not_a_model(folder, "plans.json has no usable 'architecture'")
    _check_module_class(folder, "network class", arch, _ARCH_PACKAGE)
    for key in dict.fromkeys([*req, *_OP_KEYS]):
        if key in kwargs and kwargs[key] is not None:
            _check_module_class(folder, f"architecture {key!r}", kwargs[key], _OP_PACKAGE)


def _check_module_class(folder: Path, what: str, name: Any, package: str) -> None:
    import pydoc

    import torch

    ok = (
        isinstance(name, str)
        and name.startswith(package + ".")
        and all(part.isidentifier() for part in name.split("."))
    )
    # importing a module under `package` is harmless; what it names must be a Module class there
    obj = pydoc.locate(name) if ok else None
    if obj is None:  # for the network class nnunetv2 then searches dynamic_network_architectures
        ok = ok and package == _ARCH_PACKAGE
    else:
        ok = (
            isinstance(obj, type)
            and issubclass(obj, torch.nn.Module)
            and (obj.__module__ + ".").startswith(package + ".")
        )
    if not ok:
        raise UsageError(
            f"plans.json names {what} {name!r}; synthkit only builds torch.nn.Module classes "
            f"from {package} there (nnU-Net would import and call whatever it names)",
            folder,
        )


#: What ``torch.load(weights_only=True)`` may build beyond tensors and plain Python values:
#: nnU-Net's checkpoints hold numpy float32 scalars (the training log, ``_best_ema``), pickled as
#: ``numpy._core.multiarray.scalar(numpy.dtype(code), bytes)`` (``numpy.core`` before numpy 2).
#: Those names are mapped to the two stand-ins below, which build only scalars of plain
#: number dtypes from their raw bytes; numpy's own functions are never called by the unpickler.
_PLAIN_DTYPE_CODES = frozenset(
    {"b1", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8"}
)


class _PickledDtype:
    """Stand-in for ``numpy.dtype`` while a checkpoint is read: a plain number dtype's code and
    byte order, nothing else."""

    def __init__(self, code: Any, align: Any = False, copy: Any = True):
        if not isinstance(code, str) or code not in _PLAIN_DTYPE_CODES:
            raise pickle.UnpicklingError(f"numpy dtype {code!r} is not a plain number type")
        self.code = code
        self.order = "="

    def __setstate__(self, state: Any) -> None:
        # numpy's dtype state: (version, byte order, subarray, names, fields, ...)
        if not (
            isinstance(state, tuple)
            and len(state) >= 5
            and state[1] in ("<", ">", "|", "=")
            and state[2:5] == (None, None, None)
        ):
            raise pickle.UnpicklingError("numpy dtype with fields or a sub-array")
        self.order = state[1]


def _pickled_numpy_scalar(dtype: Any, data: Any = None) -> np.generic:
    """Stand-in for ``numpy._core.multiarray.scalar``: one number from its raw bytes."""
    if not isinstance(dtype, _PickledDtype) or not hasattr(dtype, "code"):
        raise pickle.UnpicklingError("numpy scalar of an unsupported dtype")
    dt = np.dtype(dtype.order + dtype.code)
    if not isinstance(data, bytes) or len(data) != dt.itemsize:
        raise pickle.UnpicklingError(f"numpy {dt} scalar with bad data")
    return np.frombuffer(data, dtype=dt)[0]


_SAFE_NUMPY_GLOBALS = [
    (_PickledDtype, "numpy.dtype"),
    (_pickled_numpy_scalar, "numpy._core.multiarray.scalar"),
    (_pickled_numpy_scalar, "numpy.core.multiarray.scalar"),
]


def _refusal_detail(text: str) -> str:
    """What torch's weights-only unpickler stopped at, from its (long) message."""
    found = re.search(r"GLOBAL ([\w.]+)", text)
    if found:
        return f"it pickles {found.group(1)}"
    _, sep, tail = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in tail.splitlines() if line.strip()] if sep else []
    return lines[0].split(". Please use")[0] if lines else "unsupported content"


def read_checkpoint(path: Path) -> tuple[dict[str, Any], str, str, tuple[int, ...] | None]:
    """(network weights, trainer name, configuration, inference mirroring axes) of one fold's
    checkpoint, read with ``torch.load(weights_only=True)``: tensors and plain values only, so
    nothing in the file can run; anything else is refused with one line naming the file."""
    import torch

    try:
        with torch.serialization.safe_globals(_SAFE_NUMPY_GLOBALS):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - refused or unreadable; never retried unsafely
        text = str(e)
        if "Weights only load failed" in text:
            raise UsageError(
                f"refused: this nnU-Net checkpoint holds pickled objects other than tensors and "
                f"plain values ({_refusal_detail(text)}); synthkit reads checkpoints only with "
                f"torch.load(weights_only=True), which never runs code from the file",
                path,
            ) from None
        first = text.splitlines()[0] if text else ""
        raise UsageError(
            f"not a readable PyTorch checkpoint ({type(e).__name__}{': ' + first if first else ''})",
            path,
        ) from None

    def bad(why: str) -> UsageError:
        return UsageError(f"not an nnU-Net v2 checkpoint ({why})", path)

    if not isinstance(ckpt, dict):
        raise bad(f"it holds a {type(ckpt).__name__}, not a dict")
    weights = ckpt.get("network_weights")
    if not isinstance(weights, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in weights.items()
    ):
        raise bad("no 'network_weights' state dict")
    trainer = ckpt.get("trainer_name")
    if not isinstance(trainer, str) or not trainer.isidentifier():
        raise bad("no 'trainer_name'")
    init_args = ckpt.get("init_args")
    configuration = init_args.get("configuration") if isinstance(init_args, dict) else None
    if not isinstance(configuration, str):
        raise bad("no 'init_args' configuration")
    axes = ckpt.get("inference_allowed_mirroring_axes")
    if axes is not None:
        if not isinstance(axes, (list, tuple)) or not all(
            isinstance(a, int) and not isinstance(a, bool) for a in axes
        ):
            raise bad(f"bad 'inference_allowed_mirroring_axes' {axes!r}")
        axes = tuple(axes)
    return weights, trainer, configuration, axes
