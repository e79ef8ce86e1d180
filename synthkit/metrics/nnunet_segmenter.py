"""A user's trained nnU-Net v2 model as the segmenter of label fidelity.

:func:`load_nnunet` opens an nnU-Net v2 *model folder* (the trainer output folder,
``nnUNet_results/DatasetXXX_Name/<Trainer>__<Plans>__<configuration>``, holding ``plans.json``,
``dataset.json`` and ``fold_*/checkpoint_final.pth``) and runs it with nnunetv2's own
``nnUNetPredictor``; :meth:`NnUNetSegmenter.predict` segments one volume held the synthkit way.

Trust: nnU-Net checkpoints are torch pickles, and nnunetv2's
``initialize_from_trained_model_folder`` unpickles them in full, which can run code stored in the
file. synthkit never calls it: it reads each fold's checkpoint
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
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.errors import UsageError
from synthkit.metrics.nnunet_checkpoint import check_architecture, not_a_model, read_checkpoint

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


def _read_json(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    if not path.is_file():
        raise not_a_model(folder, f"no {name}")
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
        raise not_a_model(folder, "dataset.json has no 'labels'")
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
        raise not_a_model(folder, "dataset.json has no 'channel_names'")
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
        raise not_a_model(folder, f"no fold_*/{checkpoint}")
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
    ckpts = [read_checkpoint(folder / f"fold_{f}" / checkpoint) for f in folds]
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
    check_architecture(folder, config)
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
