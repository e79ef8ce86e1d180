"""nnU-Net raw dataset metadata: reading and writing ``dataset.json``.

nnU-Net v2 format (what synthkit writes)::

    {"channel_names": {"0": "T1", "1": "T2"},
     "labels": {"background": 0, "tumour": 1},
     "numTraining": 20,
     "file_ending": ".nii.gz"}

Also read: nnU-Net v1 / Medical Segmentation Decathlon files, with ``"modality": {"0": "MRI"}``
and ``"labels": {"0": "background", "1": "tumour"}``. Region-based v2 labels (a list of values
per name) are not base labels: their values only widen the set of allowed label values.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from synthkit.errors import CohortError
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


def nnunet_image_name(case_id: str, channel: int, file_ending: str = ".nii.gz") -> str:
    """``imagesTr`` file name of one channel: ``{case}_{channel:04d}{file_ending}``."""
    return f"{case_id}_{channel:04d}{file_ending}"


def nnunet_label_name(case_id: str, file_ending: str = ".nii.gz") -> str:
    """``labelsTr`` file name: ``{case}{file_ending}``."""
    return f"{case_id}{file_ending}"
