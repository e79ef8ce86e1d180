"""Validate every case of a cohort: can it be read, and is it usable for training?

:func:`check_cohort` reads each case once and returns one :class:`CaseReport` per case. A
problem in one case never stops the others. Problems are short strings such as
``"image.nii.gz: truncated or corrupt voxel data (EOFError ...)"``, ``"image has 3 NaN/Inf
voxels"``, ``"mask grid differs from image: shape (16, 16, 16) vs (16, 16, 12)"``,
``"labels outside declared set: [7]"``, ``"empty mask (no foreground)"``, ``"missing mask"``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.errors import CohortError
from synthkit.io.cohort import Case, Cohort, discover_cohort, read_image, read_mask
from synthkit.io.volume import Volume, grid_mismatch
from synthkit.progress import progress_hook


@dataclass
class CaseReport:
    """The verdict on one case. ``shape`` is the spatial ``(D, H, W)``, ``spacing`` mm,
    ``labels`` the label values present in the mask, ``channels`` the image channel count;
    each is ``None`` when it could not be read."""

    id: str
    ok: bool
    problems: list[str] = field(default_factory=list)
    shape: tuple[int, int, int] | None = None
    spacing: tuple[float, float, float] | None = None
    labels: list[int] | None = None
    channels: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "ok": self.ok,
            "problems": list(self.problems),
            "shape": list(self.shape) if self.shape is not None else None,
            "spacing": [round(s, 6) for s in self.spacing] if self.spacing is not None else None,
            "labels": self.labels,
            "channels": self.channels,
        }


def _where(path: Path | None, root: Path) -> str:
    """A short name for a file in a problem string: its path relative to the cohort root."""
    if path is None:
        return ""
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def _error_text(e: CohortError, root: Path) -> str:
    """``CohortError`` message with the absolute path shortened to the cohort-relative one."""
    msg = str(e)
    if e.path is not None:
        prefix = f"{e.path}: "
        if msg.startswith(prefix):
            msg = f"{_where(e.path, root)}: {msg[len(prefix):]}"
    return msg


def _not_3d(vol: Volume) -> str | None:
    if min(vol.spatial_shape) < 2:
        return f"not 3D (shape {vol.spatial_shape})"
    return None


def check_case(case: Case, cohort: Cohort) -> CaseReport:
    """Read one case and list everything wrong with it."""
    root = cohort.root
    problems = list(case.problems)
    rep = CaseReport(id=case.case_id, ok=False)
    image: Volume | None = None
    mask: Volume | None = None

    if case.images and not case.missing_images:
        try:
            image = read_image(case)
        except CohortError as e:
            problems.append(_error_text(e, root))
    if image is not None:
        rep.shape, rep.spacing, rep.channels = image.spatial_shape, image.spacing, image.n_channels
        if why := _not_3d(image):
            problems.append(f"image {why}")
        bad = int(np.count_nonzero(~np.isfinite(image.data)))
        if bad:
            problems.append(f"image has {bad} NaN/Inf voxels")
        if cohort.channel_names and image.n_channels != len(cohort.channel_names):
            problems.append(
                f"image has {image.n_channels} channel(s), the cohort has {len(cohort.channel_names)}"
            )

    if case.mask is not None:
        try:
            mask = read_mask(case)
        except CohortError as e:
            problems.append(_error_text(e, root))
    if mask is not None:
        values = np.unique(mask.data)
        rep.labels = [int(v) for v in values]
        if rep.shape is None:
            rep.shape, rep.spacing = mask.spatial_shape, mask.spacing
        if why := _not_3d(mask):
            problems.append(f"mask {why}")
        if not np.any(values != 0):
            problems.append("empty mask (no foreground)")
        if cohort.allowed_labels is not None:
            extra = sorted(set(rep.labels) - set(cohort.allowed_labels))
            if extra:
                problems.append(f"labels outside declared set: {extra}")
        if image is not None:
            why = grid_mismatch(image.spatial_shape, image.affine, mask.spatial_shape, mask.affine)
            if why:
                problems.append(f"mask grid differs from image: {why}")

    rep.problems = problems
    rep.ok = not problems
    return rep


def check_cohort(
    cohort: Cohort | str | Path,
    *,
    need_images: bool = True,
    progress: Any = None,
    strict: bool = False,
) -> list[CaseReport]:
    """Check every case of ``cohort`` (a :class:`Cohort` or a folder, discovered with
    ``need_images``). ``progress``: ``None``, a rich ``Progress`` or a callable
    ``(done, total)``. Raises :class:`~synthkit.errors.UsageError` only when the folder is not
    a cohort; problems of cases are reported, not raised, unless ``strict``: then the first
    unusable case raises :class:`CohortError`."""
    if not isinstance(cohort, Cohort):
        cohort = discover_cohort(cohort, need_images=need_images)
    step = progress_hook(progress, len(cohort.cases), "checking cases")
    reports = []
    for case in cohort.cases:
        rep = check_case(case, cohort)
        if strict and not rep.ok:
            raise CohortError(f"case {rep.id}: {'; '.join(rep.problems)}", cohort.root)
        reports.append(rep)
        step()
    return reports


def cohort_report(cohort: Cohort, reports: list[CaseReport]) -> dict[str, Any]:
    """The JSON document of ``synthkit cohort check --json``."""
    return {
        "cohort": str(cohort.root),
        "layout": cohort.layout,
        "channel_names": list(cohort.channel_names),
        "labels": dict(cohort.labels),
        "n_cases": len(reports),
        "n_ok": sum(r.ok for r in reports),
        "cases": [r.to_dict() for r in reports],
    }
