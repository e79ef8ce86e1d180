"""A user's trained nnU-Net v2 model as the segmenter of label fidelity.

:func:`load_nnunet` opens an nnU-Net v2 *model folder* (the trainer output folder,
``nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>``, holding ``plans.json``,
``dataset.json`` and ``fold_*/checkpoint_final.pth``) and runs it with nnunetv2's own
``nnUNetPredictor``; :meth:`NnUNetSegmenter.predict` segments one volume held the synthkit way.

Trust: nnU-Net checkpoints are torch pickles, and nnunetv2's
``initialize_from_trained_model_folder`` reads them with ``torch.load(..., weights_only=False)``,
which can run code stored in the file. synthkit never calls it: it reads each fold's checkpoint
itself with ``torch.load(..., weights_only=True)`` (tensors and plain values; the numpy number
scalars of nnU-Net's training log are built by a stand-in that makes only plain numbers), takes
the network weights, trainer name, configuration and mirroring axes from it, builds the network
with that trainer's ``build_network_architecture`` from ``plans.json`` and hands everything to
``nnUNetPredictor.manual_initialization``. A checkpoint holding any other pickled object is
refused with one line naming the file; it is never loaded another way. ``plans.json`` names the
classes nnU-Net imports and calls to build the network; only ``torch.nn.Module`` classes from
``dynamic_network_architectures`` (the network) and ``torch.nn`` (its conv, norm, dropout and
nonlinearity ops) are accepted. The trainer class is looked up by name among nnunetv2's own
trainers (or ``nnUNet_extTrainer``), as nnunetv2 does.

Axes and spacing. synthkit holds a volume as ``(C, D, H, W)`` in the order the NIfTI file stores
it (nibabel's ``i, j, k``), with a voxel -> RAS affine. nnU-Net's readers hand its network the
SimpleITK order: ``SimpleITKIO`` and ``NibabelIO`` give ``(C, k, j, i)`` and the spacing reversed
(``(s_k, s_j, s_i)``); ``NibabelIOWithReorient`` and ``SimpleITKIOWithReorient`` first turn the
voxel axes to the closest RAS order, then do the same. :func:`to_nnunet_input` does exactly that
for the reader named in the model's ``plans.json``, so an array given here reaches the network as
it would from the same NIfTI file on disk; :func:`from_nnunet_output` undoes it, so the label map
comes back on the input's grid. nnU-Net's own preprocessing (crop, normalisation, resampling to
the model's spacing) and its export back to the input shape run inside the predictor.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.errors import UsageError

#: nnU-Net readers that turn the voxel axes to RAS before the usual transpose.
_REORIENTING_READERS = frozenset({"NibabelIOWithReorient", "SimpleITKIOWithReorient"})


class NnUNetSegmenter:
    """A loaded nnU-Net v2 model; build it with :func:`load_nnunet`.

    Attributes: ``folder`` (the model folder), ``labels`` (name -> value from the model's
    ``dataset.json``, background included, nnU-Net's ``ignore`` label left out: it is never
    predicted), ``channels`` (input channel names in channel order), ``folds`` (the folds whose
    predictions are averaged).
    """

    def __init__(
        self,
        folder: Path,
        predictor: Any,
        labels: dict[str, int],
        channels: tuple[str, ...],
        folds: tuple[int | str, ...],
        reorient: bool,
    ):
        self.folder = folder
        self.labels = labels
        self.channels = channels
        self.folds = folds
        self._predictor = predictor
        self._reorient = reorient

    def __repr__(self) -> str:
        return f"NnUNetSegmenter({str(self.folder)!r}, folds={self.folds}, labels={self.labels})"

    def predict(self, image: np.ndarray, affine: np.ndarray) -> np.ndarray:
        """Segment one volume with nnU-Net's predictor.

        ``image`` ``(C, D, H, W)`` float32, channels in the order of the model's ``dataset.json``
        (``channel_names``); ``affine`` ``(4, 4)`` voxel -> RAS mm (NIfTI). Returns the label map
        ``(D, H, W)`` int16 on the same grid, values from :attr:`labels`. Raises ``ValueError``
        for a wrong number of channels or a bad shape.
        """
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 4:
            raise ValueError(f"image must be (C, D, H, W), got shape {image.shape}")
        if image.shape[0] != len(self.channels):
            raise ValueError(
                f"{self.folder}: the model takes {len(self.channels)} channel(s) "
                f"{list(self.channels)}, the image has {image.shape[0]}"
            )
        data, spacing = to_nnunet_input(image, affine, reorient=self._reorient)
        seg = self._predictor.predict_single_npy_array(data, {"spacing": spacing})
        out = from_nnunet_output(np.asarray(seg), affine, reorient=self._reorient)
        return np.ascontiguousarray(out, dtype=np.int16)


def to_nnunet_input(
    image: np.ndarray, affine: np.ndarray, *, reorient: bool = False
) -> tuple[np.ndarray, list[float]]:
    """``(C, D, H, W)`` in NIfTI file order -> (the ``(C, k, j, i)`` array, spacing ``[s_k, s_j,
    s_i]`` in mm) as nnU-Net's reader would give them for the same file.

    ``reorient=True`` follows ``NibabelIOWithReorient`` / ``SimpleITKIOWithReorient``: the voxel
    axes are first turned to the closest RAS order (nibabel's ``as_reoriented(io_orientation(affine))``).
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation

    affine = _check_affine(affine)
    if reorient:
        ornt = io_orientation(affine)
        shape = image.shape[1:]
        image = np.stack([apply_orientation(c, ornt) for c in image])
        affine = affine @ inv_ornt_aff(ornt, shape)
    zooms = np.linalg.norm(affine[:3, :3], axis=0)
    data = np.ascontiguousarray(image.transpose(0, 3, 2, 1), dtype=np.float32)
    return data, [float(z) for z in zooms[::-1]]


def from_nnunet_output(
    seg: np.ndarray, affine: np.ndarray, *, reorient: bool = False
) -> np.ndarray:
    """The inverse of :func:`to_nnunet_input` for a label map: ``(k, j, i)`` -> ``(D, H, W)``
    in the file order of the input whose ``affine`` is given."""
    from nibabel.orientations import apply_orientation, axcodes2ornt, io_orientation, ornt_transform

    if seg.ndim != 3:
        raise ValueError(f"nnU-Net returned a segmentation of shape {seg.shape}; expected 3D")
    out = seg.transpose(2, 1, 0)
    if reorient:
        back = ornt_transform(axcodes2ornt("RAS"), io_orientation(_check_affine(affine)))
        out = apply_orientation(out, back)
    return out


def _check_affine(affine: np.ndarray) -> np.ndarray:
    aff = np.asarray(affine, dtype=np.float64)
    if aff.shape != (4, 4) or not np.all(np.isfinite(aff)):
        raise ValueError(f"affine must be a finite (4, 4) matrix, got shape {aff.shape}")
    return aff


# ----------------------------------------------------------------------------- loading


def load_nnunet(
    folder: str | Path,
    *,
    device: str = "cpu",
    folds: tuple[int | str, ...] | None = None,
    checkpoint: str = "checkpoint_final.pth",
    use_mirroring: bool = True,
) -> NnUNetSegmenter:
    """Open a trained nnU-Net v2 model folder for nnunetv2's ``nnUNetPredictor``.

    ``folder``: the trainer output folder (``plans.json``, ``dataset.json``, ``fold_*/``).
    ``folds``: which folds to ensemble; ``None`` takes every ``fold_<n>`` holding
    ``checkpoint`` (nnU-Net's own choice), or ``fold_all`` when there is no numbered fold.
    ``use_mirroring``: nnU-Net's test-time mirroring (its default, on; up to 8 network passes per
    patch in 3D), off for speed. Sliding-window settings are nnU-Net's defaults.

    Each fold's checkpoint is read with ``torch.load(weights_only=True)``, never unpickled in
    full (see the module notes). Raises :class:`UsageError` naming the folder when it is
    missing, is not an nnU-Net v2 model folder, holds a region-based model, lacks a requested
    fold, its ``plans.json`` names a network or op outside dynamic_network_architectures /
    torch.nn, or nnunetv2 is not installed or cannot load it; naming the checkpoint file when
    it holds anything but tensors and plain values, is unreadable or is not an nnU-Net one.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError("nnU-Net model folder not found", folder)
    dataset = _read_json(folder, "dataset.json")
    plans = _read_json(folder, "plans.json")
    labels = _labels(dataset, folder)
    channels = _channels(dataset, folder)
    use_folds = _resolve_folds(folder, folds, checkpoint)
    reorient = str(plans.get("image_reader_writer", "")) in _REORIENTING_READERS
    predictor = _make_predictor(folder, plans, dataset, use_folds, checkpoint, device, use_mirroring)
    return NnUNetSegmenter(folder, predictor, labels, channels, use_folds, reorient)


def _not_a_model(folder: Path, why: str) -> UsageError:
    return UsageError(
        f"not an nnU-Net v2 model folder ({why}); give the trainer output folder, e.g. "
        "nnUNet_results/Dataset001_X/nnUNetTrainer__nnUNetPlans__3d_fullres",
        folder,
    )


def _read_json(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        raise _not_a_model(folder, f"no {name}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UsageError(f"{name} is not readable JSON ({e})", folder) from e
    if not isinstance(obj, dict):
        raise UsageError(f"{name} is not a JSON object", folder)
    return obj


def _labels(dataset: dict[str, Any], folder: Path) -> dict[str, int]:
    raw = dataset.get("labels")
    if not isinstance(raw, dict) or not raw:
        raise _not_a_model(folder, "dataset.json has no 'labels'")
    if any(isinstance(v, (list, tuple)) for v in raw.values()):
        raise UsageError(
            "region-based nnU-Net model (dataset.json labels are lists of values); label "
            "fidelity needs one value per label, so only label-based models are supported",
            folder,
        )
    labels: dict[str, int] = {}
    for name, value in raw.items():
        if isinstance(value, bool) or not isinstance(value, (int, str)) or not str(value).isdigit():
            raise UsageError(f"dataset.json label {name!r} has a bad value {value!r}", folder)
        if name != "ignore":  # nnU-Net's ignore label is never predicted
            labels[str(name)] = int(value)
    return labels


def _channels(dataset: dict[str, Any], folder: Path) -> tuple[str, ...]:
    raw = dataset.get("channel_names", dataset.get("modality"))
    if not isinstance(raw, dict) or not raw or not all(str(k).isdigit() for k in raw):
        raise _not_a_model(folder, "dataset.json has no 'channel_names'")
    return tuple(str(raw[k]) for k in sorted(raw, key=int))


def _resolve_folds(
    folder: Path, folds: tuple[int | str, ...] | None, checkpoint: str
) -> tuple[int | str, ...]:
    if folds is None:
        numbered = sorted(
            int(p.name[5:])
            for p in folder.glob("fold_*")
            if p.name[5:].isdigit() and (p / checkpoint).is_file()
        )
        if numbered:
            return tuple(numbered)
        if (folder / "fold_all" / checkpoint).is_file():
            return ("all",)
        raise _not_a_model(folder, f"no fold_*/{checkpoint}")
    if not folds:
        raise UsageError("folds is empty; give at least one fold (or None for all)", folder)
    out: list[int | str] = []
    for f in folds:
        name = str(f)
        if name != "all" and not name.isdigit():
            raise UsageError(f"bad fold {f!r}: use a fold number or 'all'", folder)
        if not (folder / f"fold_{name}" / checkpoint).is_file():
            raise UsageError(f"fold {name}: fold_{name}/{checkpoint} not found", folder)
        out.append(name if name == "all" else int(name))
    return tuple(out)


def _make_predictor(
    folder: Path,
    plans: dict[str, Any],
    dataset: dict[str, Any],
    folds: tuple[int | str, ...],
    checkpoint: str,
    device: str,
    use_mirroring: bool,
) -> Any:
    """nnunetv2's predictor for ``folder``: synthkit reads every fold's checkpoint with
    ``torch.load(weights_only=True)``, rebuilds the network the way nnunetv2's
    ``initialize_from_trained_model_folder`` does (which would unpickle the checkpoints in
    full) and hands both to ``nnUNetPredictor.manual_initialization``."""
    import torch

    try:
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
    except ImportError as e:
        raise UsageError(
            f"reading an nnU-Net model needs nnunetv2, which is not installed "
            f"(pip install nnunetv2): {e}",
            folder,
        ) from e
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise UsageError(f"bad device {device!r} ({e})", folder) from e
    # every fold's weights; the trainer, configuration and mirroring axes of the first
    # (nnunetv2's own rule)
    ckpts = [_read_checkpoint(folder / f"fold_{f}" / checkpoint) for f in folds]
    trainer_name, configuration, mirror_axes = ckpts[0][1:]
    weights = [c[0] for c in ckpts]
    # nnU-Net prints progress notes (e.g. that on a CPU it keeps data off the device, which
    # trainer class it found); keep them off synthkit's terminal output.
    with contextlib.redirect_stdout(io.StringIO()):
        predictor = nnUNetPredictor(
            use_mirroring=use_mirroring,
            perform_everything_on_device=dev.type == "cuda",
            device=dev,
            verbose=False,
            verbose_preprocessing=False,
            allow_tqdm=False,
        )
        try:
            network, plans_manager, config_manager = _build_network(
                folder, plans, dataset, trainer_name, configuration
            )
            network.load_state_dict(weights[0])
            predictor.manual_initialization(
                network, plans_manager, config_manager, weights, dataset, trainer_name, mirror_axes
            )
        except UsageError:
            raise
        except ModuleNotFoundError as e:
            # nnunetv2 finds a trainer class by importing its trainer modules in turn; those of
            # the Primus trainers import timm (and timm torchvision), so any trainer but the
            # base nnUNetTrainer needs them importable.
            hint = " (timm needs a torchvision built for this torch)" if e.name == "timm" else ""
            raise UsageError(
                f"nnunetv2 could not load the model: looking up its trainer class needs the "
                f"Python package {e.name!r}, which is not importable; install it{hint}",
                folder,
            ) from e
        except Exception as e:  # a trainer it cannot find, weights that do not fit the network
            msg = str(e).splitlines()[0] if str(e) else ""
            raise UsageError(
                f"nnunetv2 could not load the model ({type(e).__name__}: {msg})", folder
            ) from e
    return predictor


def _build_network(
    folder: Path, plans: dict[str, Any], dataset: dict[str, Any], trainer_name: str, configuration: str
) -> tuple[Any, Any, Any]:
    """(network, PlansManager, ConfigurationManager), the network built by the checkpoint's
    trainer class from ``plans.json``, for inference (no deep supervision), weights not loaded."""
    import copy
    import inspect

    from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name
    from nnunetv2.utilities.label_handling.label_handling import determine_num_input_channels
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    plans_manager = PlansManager(copy.deepcopy(plans))
    config = plans_manager.get_configuration(configuration)
    _check_architecture(folder, config)
    n_in = determine_num_input_channels(plans_manager, config, dataset)
    n_out = plans_manager.get_label_manager(dataset).num_segmentation_heads
    trainer = recursive_find_trainer_class_by_name(trainer_name)
    if "plans_manager" in inspect.signature(trainer.build_network_architecture).parameters:
        network = trainer.build_network_architecture(
            plans_manager, config, n_in, n_out, enable_deep_supervision=False
        )
    else:  # the signature of nnunetv2 < 2.6, still accepted by nnunetv2
        network = trainer.build_network_architecture(
            config.network_arch_class_name,
            config.network_arch_init_kwargs,
            config.network_arch_init_kwargs_req_import,
            n_in,
            n_out,
            enable_deep_supervision=False,
        )
    return network, plans_manager, config


# ----------------------------------------------------------------------------- safe reading

#: nnU-Net's network builder imports and calls the classes ``plans.json`` names (the network,
#: and its conv / norm / dropout / nonlinearity ops, built with keyword arguments from the same
#: file), so a crafted plans.json could make it call anything (``subprocess.Popen``). Only
#: torch.nn modules from these packages are let through.
_ARCH_PACKAGE = "dynamic_network_architectures"
_OP_PACKAGE = "torch.nn"
_OP_KEYS = ("conv_op", "norm_op", "dropout_op", "nonlin")


def _check_architecture(folder: Path, config: Any) -> None:
    """Raise UsageError unless the network class and the ops ``plans.json`` names are
    ``torch.nn.Module`` classes from dynamic_network_architectures and torch.nn."""
    arch = config.network_arch_class_name
    kwargs = config.network_arch_init_kwargs
    req = config.network_arch_init_kwargs_req_import
    if not isinstance(kwargs, dict) or not isinstance(req, (list, tuple)):
        raise _not_a_model(folder, "plans.json has no usable 'architecture'")
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


def _read_checkpoint(path: Path) -> tuple[dict[str, Any], str, str, tuple[int, ...] | None]:
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
