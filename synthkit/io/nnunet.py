"""nnU-Net raw datasets: reading and writing ``dataset.json``, and the one dataset writer.

nnU-Net v2 format (what synthkit writes)::

    {"channel_names": {"0": "T1", "1": "T2"},
     "labels": {"background": 0, "tumour": 1},
     "numTraining": 20,
     "file_ending": ".nii.gz"}

Also read: nnU-Net v1 / Medical Segmentation Decathlon files, with ``"modality": {"0": "MRI"}``
and ``"labels": {"0": "background", "1": "tumour"}``. Region-based v2 labels (a list of values
per name) are not base labels: their values only widen the set of allowed label values.

:class:`NnunetWriter` writes cases into that layout (``imagesTr/{case}_{XXXX}.nii.gz``, one file
per channel; ``labelsTr/{case}.nii.gz``), each file atomically, and ``dataset.json`` last, so a
dataset cut short by a crash has no ``dataset.json``. Every command that writes a dataset
(``sample``, ``augment``, ``anonymize``) writes it through this class.

Labels are written **consecutive** (nnU-Net v2 refuses others: "Labels must be in consecutive
order"): given the dataset's label table up front (name -> value, e.g. BraTS ``background 0,
necrotic core 1, edema 2, enhancing 4``), the writer stores the ``i``-th smallest value as
``i`` in every label file and ``dataset.json`` keeps the names with their new values
(``enhancing 3``); :func:`consecutive_labels` is that mapping.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from synthkit.errors import CohortError, UsageError
from synthkit.io.atomic import write_json


@dataclass(frozen=True)
class DatasetJson:
    """The parts of a ``dataset.json`` synthkit uses."""

    channel_names: tuple[str, ...]   # in channel-index order
    labels: dict[str, int]           # name -> value, background included
    allowed_labels: frozenset[int]   # every value a label file may hold
    file_ending: str                 # ".nii.gz" unless stated


def read_dataset_json(path: str | Path) -> DatasetJson:
    """Parse an nnU-Net v2 (or v1/Decathlon) ``dataset.json``; :class:`CohortError` if malformed."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CohortError(f"unreadable dataset.json ({type(e).__name__}: {e})", path) from e
    if not isinstance(raw, dict):
        raise CohortError("dataset.json is not a JSON object", path)

    chans = raw.get("channel_names", raw.get("modality", {}))
    if not isinstance(chans, dict):
        raise CohortError("'channel_names' must be an object {\"0\": name}", path)
    try:
        by_index = sorted((int(k), str(v)) for k, v in chans.items())
    except ValueError as e:
        raise CohortError(f"channel indices must be integers ({e})", path) from e
    if [i for i, _ in by_index] != list(range(len(by_index))):
        raise CohortError("channel indices must be 0, 1, 2, ...", path)
    channel_names = tuple(name for _, name in by_index)

    labels: dict[str, int] = {}
    allowed: set[int] = set()
    raw_labels = raw.get("labels", {})
    if not isinstance(raw_labels, dict):
        raise CohortError("'labels' must be an object", path)
    for k, v in raw_labels.items():
        try:
            if isinstance(v, str) and _is_int(k):  # v1: {"0": "background"}
                labels[v] = int(k)
            elif isinstance(v, bool):
                raise ValueError(v)
            elif isinstance(v, (int, float)) and float(v) == int(v):  # v2: {"background": 0}
                labels[str(k)] = int(v)
            elif isinstance(v, list):  # v2 region: {"whole tumour": [1, 2, 3]}
                allowed.update(int(x) for x in v)
            else:
                raise ValueError(v)
        except (TypeError, ValueError) as e:
            raise CohortError(f"bad label entry {k!r}: {v!r}", path) from e
    allowed.update(labels.values())
    ending = str(raw.get("file_ending", ".nii.gz"))
    return DatasetJson(channel_names, labels, frozenset(allowed), ending)


def _is_int(s: str) -> bool:
    try:
        int(s)
    except ValueError:
        return False
    return True


def write_nnunet_dataset_json(
    root: str | Path,
    channel_names: tuple[str, ...] | list[str],
    labels: dict[str, int],
    num_training: int,
    file_ending: str = ".nii.gz",
    *,
    name: str | None = None,
    description: str | None = None,
) -> Path:
    """Write ``root/dataset.json`` (nnU-Net v2) atomically and return its path.

    ``labels`` maps name -> value and must include ``background: 0``; values must be distinct
    integers. ``channel_names`` are in channel order (``_0000``, ``_0001``, ...).
    """
    if not channel_names:
        raise ValueError("channel_names must name at least one channel")
    vals = [int(v) for v in labels.values()]
    if labels.get("background") != 0:
        raise ValueError("labels must include background: 0")
    if len(set(vals)) != len(vals):
        raise ValueError(f"label values must be distinct: {labels}")
    if num_training < 0:
        raise ValueError("num_training must be >= 0")
    if not file_ending.startswith("."):
        raise ValueError("file_ending must start with '.' (e.g. '.nii.gz')")
    obj: dict[str, object] = {}
    if name:
        obj["name"] = name
    if description:
        obj["description"] = description
    obj["channel_names"] = {str(i): str(c) for i, c in enumerate(channel_names)}
    obj["labels"] = {str(k): int(v) for k, v in sorted(labels.items(), key=lambda kv: int(kv[1]))}
    obj["numTraining"] = int(num_training)
    obj["file_ending"] = file_ending
    return write_json(Path(root) / "dataset.json", obj)


def consecutive_labels(labels: dict[str, int]) -> tuple[dict[str, int], dict[int, int]]:
    """``labels`` (name -> value, ``background: 0``, distinct values) renumbered 0, 1, 2, ... in
    value order: (the new name -> value table, {old value: new value})."""
    if labels.get("background") != 0:
        raise ValueError(f"labels must include background: 0, got {labels}")
    values = sorted({int(v) for v in labels.values()})
    if len(values) != len(labels):
        raise ValueError(f"label values must be distinct: {labels}")
    old_to_new = {v: i for i, v in enumerate(values)}
    return {k: old_to_new[int(v)] for k, v in sorted(labels.items(), key=lambda kv: int(kv[1]))}, old_to_new


def nnunet_image_name(case_id: str, channel: int, file_ending: str = ".nii.gz") -> str:
    """``imagesTr`` file name of one channel: ``{case}_{channel:04d}{file_ending}``."""
    return f"{case_id}_{channel:04d}{file_ending}"


def nnunet_label_name(case_id: str, file_ending: str = ".nii.gz") -> str:
    """``labelsTr`` file name: ``{case}{file_ending}``."""
    return f"{case_id}{file_ending}"


#: What a dataset folder holds that :class:`NnunetWriter` owns (and replaces with ``existing="replace"``).
DATASET_FILES = ("dataset.json", "imagesTr", "labelsTr")

NiftiWriter = Callable[..., Path]


def _check_case_id(case_id: str) -> None:
    if not case_id or case_id.startswith(".") or any(c in case_id for c in "/\\\0") or case_id != case_id.strip():
        raise ValueError(f"bad case id {case_id!r}")


class NnunetWriter:
    """Writes cases into an nnU-Net v2 raw dataset folder ``root``.

    ``channel_names`` in channel order, or None to name them ``channel_0``, ... from the first
    image written. ``labels``: the dataset's label table, name -> value with ``background: 0``;
    label files are written with consecutive values and ``dataset.json`` with the same names
    (module docstring; :attr:`value_map` old -> new). Without it (deprecated) values are
    written as they are and :meth:`finish` needs a consecutive table. ``existing``: what to do when ``root`` already holds dataset files
    (``owned``): ``"refuse"`` (UsageError), ``"replace"`` (remove only those) or ``"keep"``
    (write beside them: resuming). ``nifti``: the NIfTI writer, ``(path, data, affine, *,
    is_label) -> path`` (default :func:`synthkit.io.nifti.write_nifti`; the de-identifying
    writer of :mod:`synthkit.privacy.deid.outputs` for shareable output).
    """

    def __init__(self, root: str | Path, channel_names: Sequence[str] | None = None,
                 labels: dict[str, int] | None = None, *, file_ending: str = ".nii.gz",
                 existing: Literal["refuse", "replace", "keep"] = "refuse",
                 owned: Sequence[str] = DATASET_FILES, nifti: NiftiWriter | None = None):
        self.root = Path(root)
        if labels is not None and labels.get("background") != 0:
            raise UsageError(f"labels must include background: 0, got {labels}")
        self.channel_names = tuple(channel_names) if channel_names else None
        self.labels: dict[str, int] | None = None
        self.value_map: dict[int, int] | None = None
        if labels is not None:
            try:
                self.labels, self.value_map = consecutive_labels(dict(labels))
            except ValueError as e:
                raise UsageError(str(e)) from None
        self.file_ending = file_ending
        self.nifti = nifti
        self.case_ids: list[str] = []
        self.label_values: set[int] = set()
        if self.root.exists() and not self.root.is_dir():
            raise UsageError("output exists and is not a folder", self.root)
        present = [n for n in owned if (self.root / n).exists()]
        if present and existing == "refuse":
            raise UsageError(f"output folder already holds a dataset ({', '.join(present)}); "
                             "choose a new --out or pass --overwrite", self.root)
        if existing == "replace":
            for n in present:
                p = self.root / n
                shutil.rmtree(p) if p.is_dir() else p.unlink()
        (self.root / "imagesTr").mkdir(parents=True, exist_ok=True)
        (self.root / "labelsTr").mkdir(parents=True, exist_ok=True)

    def names(self, case_id: str, channels: int) -> tuple[list[str], str]:
        """Relative paths of one case: (one image per channel, the label)."""
        return ([f"imagesTr/{nnunet_image_name(case_id, c, self.file_ending)}" for c in range(channels)],
                f"labelsTr/{nnunet_label_name(case_id, self.file_ending)}")

    def label_problem(self, label: Any) -> str | None:
        """Why ``label`` (Volume ``(1, D, H, W)``) cannot go into this dataset (values outside
        its label table), or None."""
        if self.value_map is None:
            return None
        extra = sorted(set(np.unique(label.data).tolist()) - set(self.value_map))
        return f"label values {extra} are not among the dataset's labels {self.labels}" if extra else None

    def _renumbered(self, label: Any) -> np.ndarray:
        data = np.asarray(label.data)
        if self.value_map is None or all(k == v for k, v in self.value_map.items()):
            return data
        lut_keys = np.asarray(sorted(self.value_map), dtype=np.int64)
        lut_vals = np.asarray([self.value_map[k] for k in lut_keys], dtype=np.int16)
        return lut_vals[np.searchsorted(lut_keys, data.astype(np.int64))]

    def write_case(self, case_id: str, image: Any, label: Any) -> list[str]:
        """Write one case: ``image`` Volume ``(C, D, H, W)`` float, ``label`` Volume ``(1, D, H, W)``
        int on the same grid (the label is stored with the image's affine and consecutive
        values). ValueError, before any file is written, for a bad case id, grid or label value.
        Returns the relative paths written, images first."""
        from synthkit.io.nifti import write_nifti
        from synthkit.io.volume import grid_mismatch

        _check_case_id(case_id)
        if case_id in self.case_ids:
            raise ValueError(f"case {case_id!r} written twice")
        if self.channel_names is None:
            self.channel_names = tuple(f"channel_{c}" for c in range(image.n_channels))
        if image.n_channels != len(self.channel_names):
            raise ValueError(f"case {case_id}: {image.n_channels} channels, dataset has {len(self.channel_names)}")
        why = grid_mismatch(image.spatial_shape, image.affine, label.spatial_shape, label.affine)
        if why:
            raise ValueError(f"case {case_id}: image and label grids differ ({why})")
        problem = self.label_problem(label)
        if problem:
            raise ValueError(f"case {case_id}: {problem}")
        write = self.nifti or write_nifti
        images, lab = self.names(case_id, image.n_channels)
        for c, rel in enumerate(images):
            write(self.root / rel, np.asarray(image.data[c : c + 1], dtype=np.float32), image.affine)
        data = self._renumbered(label)
        write(self.root / lab, data, image.affine, is_label=True)
        self.case_ids.append(case_id)
        self.label_values.update(int(v) for v in np.unique(data))
        return [*images, lab]

    def finish(self, num_training: int | None = None, *, labels: dict[str, int] | None = None,
               name: str | None = None, description: str | None = None,
               sidecars: dict[str, Any] | None = None) -> Path:
        """Write the ``sidecars`` (file name -> JSON object, e.g. a manifest), then
        ``dataset.json`` (``numTraining``: ``num_training``, default the cases written here);
        returns the root. ``labels``: only for a writer made without a label table (it must
        then be consecutive already and name every value written)."""
        for fname, obj in (sidecars or {}).items():
            write_json(self.root / fname, obj)
        if not self.channel_names:
            raise UsageError("no case could be written", self.root)
        if labels is not None and self.labels is not None and dict(labels) != self.labels:
            raise ValueError("labels were given when the writer was made; finish() cannot change them")
        labels = self.labels if self.labels is not None else labels
        if labels is None:
            raise ValueError("finish() needs labels (name -> value with background: 0)")
        if sorted(int(v) for v in labels.values()) != list(range(len(labels))):
            raise ValueError(f"dataset labels must be consecutive from 0 (nnU-Net v2), got {labels}")
        undeclared = sorted(self.label_values - {int(v) for v in labels.values()})
        if undeclared:
            raise ValueError(f"label files hold values {undeclared} that dataset.json would not declare")
        write_nnunet_dataset_json(self.root, self.channel_names, labels,
                                  len(self.case_ids) if num_training is None else num_training,
                                  self.file_ending, name=name, description=description)
        return self.root
