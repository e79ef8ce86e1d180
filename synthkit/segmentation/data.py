"""Loading a cohort or dataset as fixed-shape tensors for the segmentation benchmark.

Every case (training or test) goes through the same label-independent preparation, so that the
test grid never depends on the reference segmentation:

1. **orientation**: voxel axes permuted/flipped (exactly) to the closest RAS orientation
   (:func:`synthkit.preprocess.grid.to_ras`), so cohorts stored in different axis orders
   line up;
2. **intensity**: per channel, clipped to its 0.5th-99.5th percentile over the whole volume and
   mapped linearly to ``[-1, 1]``;
3. **grid**: the whole volume resampled to ``shape`` with :func:`synthkit.preprocess.grid.resize`
   (trilinear for images, nearest neighbour for labels; the outer edges of the two grids are
   aligned, as torch's ``align_corners=False``). No crop around the labels (as :func:`synthkit.preprocess.preprocess_case`
   does around the head): cropping on the reference of a *test* case would leak it.

Predictions are evaluated on this grid against the reference resampled the same way (nearest
neighbour), as in the paper, where all volumes are resized to one fixed size before training
and testing.

The target is binary: voxels whose (raw) label is one of the chosen values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from synthkit.errors import SynthkitError, UsageError
from synthkit.preprocess.grid import resize, to_ras

CLIP_PERCENTILES = (0.5, 99.5)


@dataclass
class SegmentationSet:
    """A cohort as tensors: ``images`` (N, C, D, H, W) float32 in [-1, 1], ``targets`` (N, D, H, W)
    bool. ``skipped`` holds one message per unreadable case (no case identifiers elsewhere)."""

    name: str
    images: torch.Tensor
    targets: torch.Tensor
    channel_names: tuple[str, ...]
    label_values: tuple[int, ...]
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.images.shape[0])


def resolve_label(label: str | int | Sequence[int], labels: dict[str, int], where: str = "") -> tuple[int, ...]:
    """The label values that make up the binary target.

    ``label``: a name from the cohort's ``labels`` (``"tumour"``; ``"tumor"`` is accepted for a
    ``"tumour"`` label and vice versa), an integer (``2``), or comma-separated integers
    (``"1,2,3"``: their union, e.g. the BraTS tumour parts). Background (0) is refused.
    """
    if isinstance(label, int):
        values: tuple[int, ...] = (label,)
    elif isinstance(label, (list, tuple)):
        values = tuple(int(v) for v in label)
    else:
        text = str(label).strip()
        parts = [p.strip() for p in text.split(",") if p.strip()]
        if parts and all(p.lstrip("-").isdigit() for p in parts):
            values = tuple(int(p) for p in parts)
        else:
            lower = {k.lower(): v for k, v in labels.items()}
            aliases = {"tumour": "tumor", "tumor": "tumour"}
            key = text.lower()
            if key not in lower and aliases.get(key) in lower:
                key = aliases[key]
            if key not in lower:
                known = ", ".join(f"{k}={v}" for k, v in labels.items()) or "none"
                raise UsageError(
                    f"{where + ': ' if where else ''}no label named {text!r} (labels: {known}); "
                    "pass a label value such as --label 2"
                )
            values = (int(lower[key]),)
    if not values or any(v == 0 for v in values):
        raise UsageError(f"{where + ': ' if where else ''}the target label must be non-zero, got {label!r}")
    return values


def normalize_intensity(image: np.ndarray, percentiles: tuple[float, float] = CLIP_PERCENTILES) -> np.ndarray:
    """Per channel: clip to the given percentiles and map linearly to [-1, 1]. (C, ...) -> (C, ...)."""
    out = np.empty(image.shape, dtype=np.float32)
    for c, ch in enumerate(image):
        lo, hi = np.percentile(ch, percentiles)
        if not (np.isfinite(lo) and np.isfinite(hi) and hi > lo):  # constant channel
            out[c] = 0.0
            continue
        out[c] = (np.clip(ch, lo, hi) - lo) / (hi - lo) * 2.0 - 1.0
    return out


def prepare_case(
    image: np.ndarray,
    image_affine: np.ndarray,
    labels: np.ndarray,
    label_affine: np.ndarray,
    shape: tuple[int, int, int],
    label_values: tuple[int, ...],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One case: image (C, D, H, W) and label map (1, D, H, W) or (D, H, W) on the same grid ->
    (image (C, *shape) float32 in [-1, 1], target (*shape) bool)."""
    if labels.ndim == 3:
        labels = labels[None]
    if image.shape[1:] != labels.shape[1:]:
        raise ValueError(f"image grid {image.shape[1:]} != label grid {labels.shape[1:]}")
    img = to_ras(np.asarray(image, dtype=np.float32), image_affine)
    lab = to_ras(np.isin(labels, label_values), label_affine)
    size = (int(shape[0]), int(shape[1]), int(shape[2]))
    x = torch.from_numpy(np.ascontiguousarray(resize(normalize_intensity(img), size), dtype=np.float32))
    y = torch.from_numpy(np.ascontiguousarray(resize(lab, size, label=True)[0]))
    return x.clamp_(-1.0, 1.0).contiguous(), y


def load_segmentation_set(
    path: str | Path,
    *,
    shape: tuple[int, int, int],
    label: str | int = "tumour",
    name: str | None = None,
    strict: bool = False,
    progress=None,
) -> SegmentationSet:
    """Read every case of a cohort/dataset (any layout :func:`synthkit.io.discover_cohort` knows,
    e.g. an nnU-Net raw dataset written by ``synthkit augment``) and prepare it (module docstring).

    A case that cannot be read is reported in ``skipped`` (or raised with ``strict=True``);
    a cohort with no usable case raises :class:`UsageError`. ``progress``: optional rich
    ``Progress``.
    """
    from synthkit.io import discover_cohort, read_image, read_mask

    path = Path(path)
    cohort = discover_cohort(path)
    values = resolve_label(label, dict(cohort.labels), where=str(path))
    task = None
    if progress is not None:
        task = progress.add_task(f"load {name or path.name}", total=len(cohort.cases))
    images, targets, skipped = [], [], []
    for i, case in enumerate(cohort.cases):
        try:
            if case.mask is None:
                raise UsageError(f"case {i} has no label map")
            img, msk = read_image(case), read_mask(case)
            x, y = prepare_case(img.data, img.affine, msk.data, msk.affine, shape, values)
            images.append(x)
            targets.append(y)
        except (SynthkitError, ValueError) as e:
            if strict:
                raise
            skipped.append(str(e))
        if task is not None:
            progress.advance(task)
    if not images:
        raise UsageError(f"no usable case with image and label map ({len(skipped)} skipped)", path)
    channels = {int(x.shape[0]) for x in images}
    if len(channels) != 1:
        raise UsageError(f"cases have different channel counts {sorted(channels)}", path)
    return SegmentationSet(
        name=name or path.name,
        images=torch.stack(images),
        targets=torch.stack(targets),
        channel_names=tuple(cohort.channel_names),
        label_values=values,
        skipped=skipped,
    )
