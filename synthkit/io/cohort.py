"""Cohort discovery: find the cases of a folder and pair images with masks by case id.

Recognised layouts (``Cohort.layout``):

``nnunet``  nnU-Net raw: ``imagesTr/{case}_{0000..}.nii.gz``, ``labelsTr/{case}.nii.gz``,
            ``dataset.json`` (v2 ``channel_names``/``labels``, or v1 ``modality``/``labels``);
            ``imagesTs/`` cases (with ``labelsTs/`` if present, else no mask expected).
            Decathlon-style files without the ``_0000`` suffix are one (possibly 4D) file each.
``flat``    ``images/{case}.nii[.gz]`` (3D, or 4D = several channels) + ``masks/{case}.nii[.gz]``.
``brats``   ``{case}/{case}_{t1,t1ce,t2,flair,seg}.nii.gz`` or the BraTS 2023 names
            ``t1n, t1c, t2w, t2f`` (``_`` or ``-`` before the suffix); channels T1, T1ce, T2,
            FLAIR.
``dicom``   ``images/{case}/`` holding one DICOM series + ``masks/{case}.nii[.gz]``.
``masks``   only with ``need_images=False``: a plain folder of mask NIfTIs (or ``masks/``
            without ``images/``).

Pairing is always by case id, never by sort order. A missing partner is recorded in
``Case.problems`` and the case is still listed. A ``dataset.json`` at the root of a flat or
DICOM cohort is honoured too (channel and label names).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthkit.errors import CohortError, UsageError
from synthkit.io import brats
from synthkit.io.dicom import peek_modality, read_dicom_series
from synthkit.io.nifti import (
    is_nifti,
    nifti_header_shape,
    nifti_suffix,
    read_nifti,
    strip_nifti_suffix,
)
from synthkit.io.nnunet import DatasetJson, read_dataset_json
from synthkit.io.volume import Volume, grid_mismatch

_NNUNET_RE = re.compile(r"^(.+)_(\d{4})$")

_LAYOUT_HELP = (
    "expected nnU-Net raw (imagesTr/, labelsTr/, dataset.json), flat (images/ + masks/), "
    "BraTS ({case}/{case}_t1.nii.gz ...) or DICOM (images/{case}/ series + masks/)"
)


@dataclass(frozen=True)
class Case:
    """One case. ``images`` holds existing files only: one per channel in channel order
    (nnU-Net, BraTS), or one (possibly 4D) NIfTI, or one DICOM series folder; ``()`` when no
    image was found. ``missing_images`` names expected channel files that do not exist
    (:func:`read_image` refuses such a case). ``mask`` is ``None`` when there is none.
    ``problems`` are what discovery found wrong (missing partner, duplicate files, ...)."""

    case_id: str
    images: tuple[Path, ...]
    mask: Path | None
    problems: tuple[str, ...] = ()
    missing_images: tuple[Path, ...] = ()
    expects_mask: bool = True  # False for nnU-Net imagesTs cases without labelsTs


@dataclass
class Cohort:
    """A discovered cohort. ``labels`` maps name -> value (background included) when the
    cohort declares them (dataset.json, BraTS), else it is empty. ``allowed_labels`` is the set
    of values a mask may hold, ``None`` when undeclared."""

    root: Path
    layout: str
    cases: list[Case]
    channel_names: tuple[str, ...]
    labels: dict[str, int]
    allowed_labels: frozenset[int] | None = None
    has_images: bool = True

    def __len__(self) -> int:
        return len(self.cases)

    def __iter__(self) -> Iterator[Case]:
        return iter(self.cases)

    def case(self, case_id: str) -> Case:
        for c in self.cases:
            if c.case_id == case_id:
                return c
        raise KeyError(case_id)


# ----------------------------------------------------------------------------- helpers


def _nifti_by_id(folder: Path) -> tuple[dict[str, Path], dict[str, list[str]]]:
    """NIfTI files of ``folder`` by case id, plus ids with several files (``a.nii``+``a.nii.gz``)."""
    found: dict[str, Path] = {}
    dups: dict[str, list[str]] = {}
    if not folder.is_dir():
        return found, dups
    for p in sorted(folder.iterdir()):
        if p.is_file() and is_nifti(p):
            cid = strip_nifti_suffix(p.name)
            if cid in found:
                dups.setdefault(cid, [found[cid].name]).append(p.name)
            else:
                found[cid] = p
    return found, dups


def _dataset_json(root: Path) -> DatasetJson | None:
    p = root / "dataset.json"
    return read_dataset_json(p) if p.is_file() else None


def _labels_of(dj: DatasetJson | None) -> tuple[dict[str, int], frozenset[int] | None]:
    if dj is None or not dj.labels:
        return {}, None
    return dict(dj.labels), dj.allowed_labels


# ----------------------------------------------------------------------------- layouts


def _discover_nnunet(root: Path, need_images: bool) -> Cohort:
    dj = _dataset_json(root)
    declared = len(dj.channel_names) if dj and dj.channel_names else 0
    # First pass: group image files per split and case.
    splits = []
    max_ch = 0
    for img_dir, lab_dir, labelled in (("imagesTr", "labelsTr", True), ("imagesTs", "labelsTs", False)):
        per_case: dict[str, dict[int, Path]] = {}
        whole: dict[str, Path] = {}  # Decathlon style: one file per case, no channel suffix
        d = root / img_dir
        if d.is_dir():
            for p in sorted(d.iterdir()):
                if not (p.is_file() and is_nifti(p)):
                    continue
                m = _NNUNET_RE.match(strip_nifti_suffix(p.name))
                if m:
                    per_case.setdefault(m.group(1), {})[int(m.group(2))] = p
                    max_ch = max(max_ch, int(m.group(2)) + 1)
                else:
                    whole[strip_nifti_suffix(p.name)] = p
        labels, dups = _nifti_by_id(root / lab_dir)
        has_labels_dir = (root / lab_dir).is_dir()
        splits.append((d, per_case, whole, labels, dups, labelled or has_labels_dir))
    n_ch = declared or max_ch or 1

    cases: list[Case] = []
    seen: set[str] = set()
    for d, per_case, whole, labels, dups, expects_mask in splits:
        for cid in sorted(set(per_case) | set(whole) | set(labels)):
            problems: list[str] = []
            if cid in seen:
                problems.append("case id appears in both imagesTr and imagesTs")
            seen.add(cid)
            images: tuple[Path, ...]
            missing: tuple[Path, ...] = ()
            if cid in per_case:
                chans = per_case[cid]
                ext = nifti_suffix(next(iter(chans.values())).name)
                images = tuple(chans[c] for c in range(n_ch) if c in chans)
                missing = tuple(d / f"{cid}_{c:04d}{ext}" for c in range(n_ch) if c not in chans)
                if need_images:
                    problems.extend(f"missing image {p.name}" for p in missing)
                for c in sorted(set(chans) - set(range(n_ch))):
                    problems.append(f"unexpected channel file {chans[c].name}")
                if cid in whole:
                    problems.append(f"extra file {whole[cid].name} without channel suffix")
            elif cid in whole:
                images = (whole[cid],)
            else:
                images = ()
                if need_images:
                    problems.append("missing image")
            if cid in dups:
                problems.append(f"several label files: {', '.join(dups[cid])}")
            mask = labels.get(cid)
            if mask is None and expects_mask:
                problems.append("missing mask")
            cases.append(Case(cid, images, mask, tuple(problems), missing, expects_mask))
    names = dj.channel_names if dj and dj.channel_names else _default_channel_names(n_ch)
    labels_, allowed = _labels_of(dj)
    return Cohort(root, "nnunet", cases, names, labels_, allowed)


def _default_channel_names(n: int) -> tuple[str, ...]:
    return ("image",) if n == 1 else tuple(f"channel_{i}" for i in range(n))


def _pair_masks(
    root: Path, images: dict[str, Path], need_images: bool, image_dups: dict[str, list[str]]
) -> list[Case]:
    masks, mask_dups = _nifti_by_id(root / "masks")
    cases = []
    for cid in sorted(set(images) | set(masks)):
        problems: list[str] = []
        if cid in image_dups:
            problems.append(f"several image files: {', '.join(image_dups[cid])}")
        if cid in mask_dups:
            problems.append(f"several mask files: {', '.join(mask_dups[cid])}")
        if cid not in images and need_images:
            problems.append("missing image")
        if cid not in masks:
            problems.append("missing mask")
        img = (images[cid],) if cid in images else ()
        cases.append(Case(cid, img, masks.get(cid), tuple(problems)))
    return cases


def _discover_flat(root: Path, need_images: bool) -> Cohort:
    dj = _dataset_json(root)
    images, dups = _nifti_by_id(root / "images")
    cases = _pair_masks(root, images, need_images, dups)
    if dj and dj.channel_names:
        names = dj.channel_names
    else:
        n = 1
        for p in images.values():  # header of the first readable image tells the channel count
            try:
                shape = nifti_header_shape(p)
            except CohortError:
                continue
            n = shape[3] if len(shape) == 4 else (shape[4] if len(shape) == 5 else 1)
            break
        names = _default_channel_names(n)
    labels, allowed = _labels_of(dj)
    return Cohort(root, "flat", cases, names, labels, allowed)


def _discover_dicom(root: Path, need_images: bool) -> Cohort:
    dj = _dataset_json(root)
    series = {p.name: p for p in sorted((root / "images").iterdir())
              if p.is_dir() and not p.name.startswith(".")}
    cases = _pair_masks(root, series, need_images, {})
    if dj and dj.channel_names:
        names = dj.channel_names
    else:
        first = next(iter(series.values()), None)
        names = ((first and peek_modality(first)) or "image",)
    labels, allowed = _labels_of(dj)
    return Cohort(root, "dicom", cases, names, labels, allowed)


def _discover_brats(root: Path, dirs: dict[Path, dict[str, list[Path]]], need_images: bool) -> Cohort:
    is_2023 = brats.is_2023(dirs)
    cases = [Case(d.name, *brats.case_files(d, files, is_2023, need_images)) for d, files in dirs.items()]
    labels = dict(brats.LABELS_2023 if is_2023 else brats.LABELS)
    return Cohort(root, "brats", cases, brats.CHANNELS, labels, frozenset(labels.values()))


def _discover_masks(folder: Path, root: Path) -> Cohort:
    dj = _dataset_json(root)
    masks, dups = _nifti_by_id(folder)
    cases = [
        Case(cid, (), p, (f"several mask files: {', '.join(dups[cid])}",) if cid in dups else ())
        for cid, p in sorted(masks.items())
    ]
    labels, allowed = _labels_of(dj)
    return Cohort(root, "masks", cases, (), labels, allowed, has_images=False)


# ----------------------------------------------------------------------------- public API


def discover_cohort(path: str | Path, *, need_images: bool = True) -> Cohort:
    """Find the cases of the cohort folder ``path`` (see the module docstring for layouts).

    Raises :class:`UsageError` when ``path`` is missing, not a folder, in no recognised layout
    or holds no case. With ``need_images=False`` missing images are not a problem and a plain
    folder of mask NIfTIs is accepted (layout ``"masks"``).
    """
    root = Path(path)
    if not root.exists():
        raise UsageError("no cohort here: folder not found", root)
    if not root.is_dir():
        raise UsageError("not a folder; a cohort is a folder", root)

    cohort: Cohort | None = None
    if (root / "imagesTr").is_dir() or (root / "imagesTs").is_dir() or (
        (root / "labelsTr").is_dir() and not need_images
    ):
        cohort = _discover_nnunet(root, need_images)
    elif (root / "labelsTr").is_dir():
        raise UsageError("nnU-Net folder with labelsTr/ but no imagesTr/", root)
    elif (root / "images").is_dir():
        img = root / "images"
        has_nii = any(p.is_file() and is_nifti(p) for p in img.iterdir())
        has_dirs = any(p.is_dir() and not p.name.startswith(".") for p in img.iterdir())
        if has_nii and has_dirs:
            raise UsageError("images/ mixes NIfTI files and folders; use one layout", root)
        if has_dirs:
            cohort = _discover_dicom(root, need_images)
        else:
            cohort = _discover_flat(root, need_images)
    elif (root / "masks").is_dir():
        if need_images:
            raise UsageError("has masks/ but no images/", root)
        cohort = _discover_masks(root / "masks", root)
    else:
        dirs = brats.case_dirs(root)
        if dirs:
            cohort = _discover_brats(root, dirs, need_images)
        elif not need_images and any(p.is_file() and is_nifti(p) for p in root.iterdir()):
            cohort = _discover_masks(root, root)
    if cohort is None:
        raise UsageError(f"unrecognised cohort layout; {_LAYOUT_HELP}", root)
    if not cohort.cases:
        raise UsageError(f"no cases found in this {cohort.layout} cohort", root)
    if not need_images:
        cohort.has_images = cohort.has_images and any(c.images for c in cohort.cases)
    return cohort


def read_image(case: Case) -> Volume:
    """All channels of ``case`` stacked as ``(C, D, H, W)`` float32 with the shared affine.

    Raises :class:`CohortError` naming the file when a channel is missing, unreadable or on a
    different grid from the first channel.
    """
    if case.missing_images:
        raise CohortError(f"case {case.case_id}: image file not found", case.missing_images[0])
    if not case.images:
        raise CohortError(f"case {case.case_id}: no image file")
    vols = []
    for p in case.images:
        vols.append(read_dicom_series(p) if p.is_dir() else read_nifti(p))
    ref = vols[0]
    for p, v in zip(case.images[1:], vols[1:]):
        why = grid_mismatch(ref.spatial_shape, ref.affine, v.spatial_shape, v.affine)
        if why:
            raise CohortError(f"channel grid differs from {case.images[0].name} ({why})", p)
    data = ref.data if len(vols) == 1 else np.concatenate([v.data for v in vols], axis=0)
    return Volume(data=np.ascontiguousarray(data, dtype=np.float32), affine=ref.affine)


def read_mask(case: Case) -> Volume:
    """The label map of ``case`` as ``(1, D, H, W)`` int16; :class:`CohortError` if absent or bad."""
    if case.mask is None:
        raise CohortError(f"case {case.case_id}: no mask file")
    return read_nifti(case.mask, is_label=True)
