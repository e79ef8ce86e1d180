"""Validating an nnU-Net v2 raw dataset (and the writer as ``synthkit augment`` uses it).

Layout (nnU-Net v2 "dataset format", also read by MONAI and by ``synthkit`` itself)::

    DATASET/
      dataset.json                  {"channel_names": {"0": "T1"}, "labels": {"background": 0, ...},
                                     "numTraining": N, "file_ending": ".nii.gz"}
      imagesTr/{case}_0000.nii.gz   one file per channel, 4-digit channel index
      labelsTr/{case}.nii.gz        integer label map on the same grid (shape and affine)

:class:`NnunetDatasetWriter` (the one nnU-Net writer, :class:`synthkit.io.nnunet.NnunetWriter`)
writes cases atomically and ``dataset.json`` last (so a dataset cut short by a crash has no
``dataset.json`` and fails validation). :func:`validate_nnunet_dataset` checks a folder against
the format and returns every problem found (empty list: valid).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from synthkit.errors import SynthkitError
from synthkit.io.nnunet import DATASET_FILES as NNUNET_FILES
from synthkit.io.nnunet import NnunetWriter
from synthkit.io.volume import grid_mismatch

DATASET_FILES = (*NNUNET_FILES, "augment.json")


class NnunetDatasetWriter(NnunetWriter):
    """The nnU-Net writer (:class:`synthkit.io.nnunet.NnunetWriter`) as ``synthkit augment`` uses
    it: a new dataset folder (refused if one is there, unless ``overwrite``, which removes only
    ``dataset.json``, ``augment.json``, ``imagesTr/`` and ``labelsTr/``), ``augment.json`` written
    by :meth:`finish` next to ``dataset.json``."""

    def __init__(self, root: str | Path, channel_names: tuple[str, ...] | None, labels: dict[str, int], *,
                 file_ending: str = ".nii.gz", overwrite: bool = False):
        super().__init__(root, channel_names, labels, file_ending=file_ending,
                         existing="replace" if overwrite else "refuse", owned=DATASET_FILES)

    def finish(self, manifest: dict | None = None, **kw) -> Path:  # type: ignore[override]
        """Write ``augment.json`` (when ``manifest`` is given), then ``dataset.json``; returns the root."""
        return super().finish(sidecars={"augment.json": manifest} if manifest is not None else None, **kw)


def _read_json(path: Path, problems: list[str]) -> dict | None:
    import json

    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        problems.append(f"{path}: missing")
        return None
    except (OSError, UnicodeDecodeError, ValueError) as e:
        problems.append(f"{path}: not valid JSON ({e})")
        return None
    if not isinstance(obj, dict):
        problems.append(f"{path}: not a JSON object")
        return None
    return obj


def _check_dataset_json(dj: dict, path: Path, problems: list[str]) -> tuple[int, set[int], str]:
    """Returns (number of channels, allowed label values, file ending)."""
    for key in ("channel_names", "labels", "numTraining", "file_ending"):
        if key not in dj:
            problems.append(f"{path}: missing key {key!r}")
    chans = dj.get("channel_names", {})
    n_chan = 0
    if not isinstance(chans, dict) or not chans:
        problems.append(f"{path}: channel_names must be a non-empty object {{\"0\": name}}")
    else:
        keys = sorted(chans)
        if keys != sorted(str(i) for i in range(len(chans))):
            problems.append(f"{path}: channel_names keys must be \"0\", \"1\", ... (got {keys})")
        n_chan = len(chans)
    labels = dj.get("labels", {})
    allowed: set[int] = set()
    if not isinstance(labels, dict):
        problems.append(f"{path}: labels must be an object name -> value")
    else:
        for name, v in labels.items():
            if isinstance(v, bool) or not isinstance(v, (int, list)):
                problems.append(f"{path}: label {name!r} has value {v!r}, expected an integer")
            elif isinstance(v, int):
                allowed.add(v)
            else:
                allowed.update(int(x) for x in v if isinstance(x, int))
        if labels.get("background") != 0:
            problems.append(f"{path}: labels must contain \"background\": 0")
        plain = [v for v in labels.values() if isinstance(v, int) and not isinstance(v, bool)]
        if sorted(plain) != list(range(len(plain))):
            problems.append(f"{path}: label values must be consecutive from 0 (got {sorted(plain)})")
    ending = dj.get("file_ending", ".nii.gz")
    if not isinstance(ending, str) or not ending.startswith("."):
        problems.append(f"{path}: file_ending must be a string such as \".nii.gz\"")
        ending = ".nii.gz"
    if not isinstance(dj.get("numTraining", 0), int):
        problems.append(f"{path}: numTraining must be an integer")
    return n_chan, allowed, ending


def validate_nnunet_dataset(path: str | Path, *, check_data: bool = True) -> list[str]:
    """Every way ``path`` fails to be a usable nnU-Net v2 raw training dataset.

    Checks: ``dataset.json`` has ``channel_names`` (keys ``"0"..``), ``labels`` with
    ``background: 0`` and consecutive values, integer ``numTraining`` equal to the number of
    cases, ``file_ending``; every file in ``imagesTr``/``labelsTr`` has that ending and an
    nnU-Net name; every label has exactly one image per channel and every image a label; each
    image file is a 3D volume on the label's grid (same shape and affine, within
    :func:`synthkit.io.volume.grid_mismatch` tolerances). With ``check_data`` the voxels are
    read too: images finite, label values among the declared labels.

    Returns one ``"<file>: <problem>"`` string per problem; ``[]`` means valid.
    """
    import nibabel as nib

    from synthkit.io.nifti import read_nifti

    root = Path(path)
    problems: list[str] = []
    if not root.is_dir():
        return [f"{root}: not a folder"]
    dj = _read_json(root / "dataset.json", problems)
    n_chan, allowed, ending = _check_dataset_json(dj, root / "dataset.json", problems) if dj else (0, set(), ".nii.gz")
    img_dir, lab_dir = root / "imagesTr", root / "labelsTr"
    for d in (img_dir, lab_dir):
        if not d.is_dir():
            problems.append(f"{d}: missing folder")
    if problems and not (img_dir.is_dir() and lab_dir.is_dir()):
        return problems

    def listing(d: Path) -> list[str]:
        names = []
        for p in sorted(d.iterdir()):
            if p.name.startswith("."):
                continue
            if not p.is_file() or not p.name.endswith(ending):
                problems.append(f"{p}: not a {ending} file")
                continue
            names.append(p.name[: -len(ending)])
        return names

    labels = set(listing(lab_dir))
    images: dict[str, set[int]] = {}
    for stem in listing(img_dir):
        m = re.fullmatch(r"(.+)_(\d{4})", stem)
        if not m:
            problems.append(f"{img_dir / (stem + ending)}: image name must be {{case}}_{{XXXX}}{ending}")
            continue
        images.setdefault(m.group(1), set()).add(int(m.group(2)))
    for case in sorted(set(images) - labels):
        problems.append(f"{img_dir}: images of case {case!r} have no label file in labelsTr")
    if dj is not None and isinstance(dj.get("numTraining"), int) and dj["numTraining"] != len(labels):
        problems.append(f"{root / 'dataset.json'}: numTraining is {dj['numTraining']} but labelsTr holds {len(labels)} case(s)")
    if not labels:
        problems.append(f"{lab_dir}: no cases")
    for case in sorted(labels):
        lab_path = lab_dir / f"{case}{ending}"
        have = images.get(case, set())
        want = set(range(n_chan)) if n_chan else have
        for c in sorted(want - have):
            problems.append(f"{img_dir / f'{case}_{c:04d}{ending}'}: missing (label {lab_path.name} has no image for channel {c})")
        for c in sorted(have - want):
            problems.append(f"{img_dir / f'{case}_{c:04d}{ending}'}: channel {c} not declared in dataset.json")
        try:
            lab_img = nib.load(str(lab_path))
            lab_shape, lab_aff = tuple(lab_img.shape), lab_img.affine
        except Exception as e:  # noqa: BLE001  (nibabel raises several types)
            problems.append(f"{lab_path}: unreadable NIfTI ({type(e).__name__})")
            continue
        if len(lab_shape) != 3:
            problems.append(f"{lab_path}: label map must be 3D, has shape {lab_shape}")
            continue
        if check_data:
            try:
                vals = set(np.unique(read_nifti(lab_path, is_label=True).data).tolist())
                extra = vals - allowed if allowed else set()
                if extra:
                    problems.append(f"{lab_path}: label values {sorted(extra)} not declared in dataset.json")
            except SynthkitError as e:
                problems.append(str(e))
        for c in sorted(have & want):
            problems += _image_problems(img_dir / f"{case}_{c:04d}{ending}", lab_path, lab_shape, lab_aff, check_data)
    return problems


def _image_problems(p: Path, lab_path: Path, lab_shape: tuple[int, ...], lab_aff, check_data: bool) -> list[str]:
    """One image file of a case: a readable 3D NIfTI on its label's grid (finite voxels)."""
    import nibabel as nib

    from synthkit.io.nifti import read_nifti

    try:
        im = nib.load(str(p))
        shape = tuple(im.shape)
    except Exception as e:  # noqa: BLE001  (nibabel raises several types)
        return [f"{p}: unreadable NIfTI ({type(e).__name__})"]
    if len(shape) != 3:
        return [f"{p}: image must be 3D (one file per channel), has shape {shape}"]
    problems = []
    why = grid_mismatch(shape, im.affine, lab_shape, lab_aff)
    if why:
        problems.append(f"{p}: grid differs from its label {lab_path.name} ({why})")
    if check_data:
        try:
            if not np.all(np.isfinite(read_nifti(p).data)):
                problems.append(f"{p}: image has NaN/Inf voxels")
        except SynthkitError as e:
            problems.append(str(e))
    return problems
