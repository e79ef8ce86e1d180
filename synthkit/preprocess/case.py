"""From a raw case to network inputs, and back to the case's own grid.

:func:`preprocess_case` turns an image ``(C, D, H, W)`` and its label map ``(1, D, H, W)``
into fixed-size tensors for the network, in this order:

1. **labels**: raw values remapped with ``cfg.label_map`` (e.g. BraTS ``{"4": 3}``); with
   ``cfg.brain_label`` set, unlabelled voxels inside the brain (first image channel above
   ``brain_threshold`` of its robust range, holes filled) get that label (paper, BraTS setup).
2. **orientation**: axes permuted/flipped (exactly, no interpolation) so that voxel axes point
   along ``cfg.orientation`` (``"RAS"`` by default), as :func:`nibabel.orientations` defines it.
3. **intensity**: per channel, ``lo``/``hi`` are the ``cfg.clip_percentiles`` of the voxels
   inside the head (label > 0) and, with ``cfg.intensity_bounds == "per_label"``, widened to
   the same percentiles taken inside each label alone (a bright enhancing rim keeps its range);
   values are clipped to ``[lo, hi]`` and mapped to ``[-1, 1]``.
4. **grid**: one resampling step from the reoriented grid to the ``cfg.target_shape`` output
   grid, centred on the head's bounding box (foreground of the label map; the non-zero image
   when the label map is empty). With ``cfg.target_spacing`` the output has that spacing and
   a head larger than the box is cropped (``record.truncated``). Without it the native spacing
   is kept, and a head that does not fit is shrunk by one *uniform* zoom factor on all axes
   (physical aspect ratio kept; the spacing grows by ``1 / zoom``), then padded. Images are
   interpolated linearly, labels with nearest neighbour (never linearly). Where no resampling
   is needed (native spacing, head fits) the step is an integer crop/pad and is exact.
   Padding is ``-1`` for images and ``0`` for labels.

Everything needed to undo steps 2-4 is kept in a JSON-serialisable :class:`GridRecord`;
:func:`to_original_grid` maps a generated ``(C, D, H, W)`` volume back onto the original grid
of the case's mask, with its original affine, and intensities back to ``[lo, hi]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage

from synthkit import _codec
from synthkit.config import PreprocessConfig
from synthkit.errors import CohortError
from synthkit.io.volume import Volume, grid_mismatch, spacing_from_affine
from synthkit.preprocess.grid import apply_ornt, reorient, resample, undo_ornt

RECORD_VERSION = 1


@dataclass(frozen=True)
class GridRecord:
    """How a case's arrays were moved onto the network grid (all lists, JSON-serialisable).

    ``index_scale``/``index_offset`` map an output voxel index ``p`` to a continuous voxel
    index in the *reoriented* input grid: ``q = index_scale * p + index_offset``.
    ``ornt`` is the nibabel orientation transform applied to the original arrays.
    ``lo``/``hi`` are the per-channel intensity bounds mapped to -1/+1 (empty without image).
    """

    original_shape: tuple[int, int, int]
    original_affine: tuple[tuple[float, ...], ...]
    ornt: tuple[tuple[float, float], ...]
    reoriented_shape: tuple[int, int, int]
    index_scale: tuple[float, float, float]
    index_offset: tuple[float, float, float]
    output_shape: tuple[int, int, int]
    output_affine: tuple[tuple[float, ...], ...]
    lo: tuple[float, ...] = ()
    hi: tuple[float, ...] = ()
    zoom: float = 1.0
    truncated: bool = False
    version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        return _codec.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GridRecord:
        """Inverse of :meth:`to_dict`; ``ValueError`` for unknown keys or wrong types."""
        return _codec.from_dict(cls, data, "GridRecord", ValueError)

    @property
    def output_spacing(self) -> tuple[float, float, float]:
        return spacing_from_affine(np.asarray(self.output_affine))


@dataclass
class Preprocessed:
    """One preprocessed case.

    ``image``: ``(C, D, H, W)`` float32 in ``[-1, 1]`` (``None`` for a mask-only case);
    ``labels``: ``(D, H, W)`` int64 after ``label_map``/``brain_label``; ``record``: the way back.
    """

    image: torch.Tensor | None
    labels: torch.Tensor
    record: GridRecord


# ----------------------------------------------------------------------------- helpers


def one_hot(
    labels: torch.Tensor | np.ndarray, mask_labels: tuple[int, ...]
) -> torch.Tensor | np.ndarray:
    """One-hot encode a label map, background dropped, channels in the order of ``mask_labels``.

    ``labels`` ``(D, H, W)`` -> ``(K, D, H, W)``; ``(N, D, H, W)`` -> ``(N, K, D, H, W)``, with
    ``K = len(mask_labels)``; float32, same library (torch/numpy) as the input. Label values
    not listed get no channel.
    """
    if len(mask_labels) == 0:
        raise ValueError("mask_labels is empty")
    if labels.ndim not in (3, 4):
        raise ValueError(
            f"labels must be (D, H, W) or (N, D, H, W), got shape {tuple(labels.shape)}"
        )
    axis = 0 if labels.ndim == 3 else 1
    if isinstance(labels, torch.Tensor):
        return torch.stack([labels == v for v in mask_labels], dim=axis).to(torch.float32)
    arr = np.asarray(labels)
    return np.stack([arr == v for v in mask_labels], axis=axis).astype(np.float32)


def _brain_from_image(ch0: np.ndarray, threshold: float, upper_pct: float) -> np.ndarray:
    """Brain/head voxels: above ``threshold`` of the robust range of the first channel."""
    lo = float(ch0.min())
    hi = float(np.percentile(ch0, upper_pct))
    if hi <= lo:
        return np.zeros(ch0.shape, bool)
    return ndimage.binary_fill_holes(ch0 > lo + threshold * (hi - lo))


def remap_labels(labels: np.ndarray, label_map: dict[str, int] | None) -> np.ndarray:
    """Apply ``label_map`` (string keys as in JSON, e.g. ``{"4": 3}``) simultaneously."""
    if not label_map:
        return labels
    out = labels.copy()
    for src, dst in label_map.items():
        out[labels == int(src)] = int(dst)
    return out


def _head_box(fg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.nonzero(fg)
    return np.array([i.min() for i in idx], float), np.array([i.max() for i in idx], float)


# ----------------------------------------------------------------------------- forward


def _checked_arrays(image: Volume | None, mask: Volume) -> tuple[np.ndarray | None, np.ndarray]:
    """(image ``(C, D, H, W)`` float32 or None, labels ``(D, H, W)`` int16), grids checked."""
    if mask.data.shape[0] != 1:
        raise CohortError(f"mask must have one channel, got {mask.data.shape[0]}")
    labels = np.asarray(mask.data[0]).astype(np.int16, copy=False)
    if image is None:
        return None, labels
    why = grid_mismatch(image.spatial_shape, image.affine, mask.spatial_shape, mask.affine)
    if why is not None:
        raise CohortError(f"image and mask are not on the same grid ({why})")
    img = np.asarray(image.data, dtype=np.float32)
    if not np.isfinite(img.sum(dtype=np.float64)) and not np.all(np.isfinite(img)):
        raise CohortError("image holds NaN/Inf voxels")
    return img, labels


def add_brain_label(labels: np.ndarray, first_channel: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """The brain-label rule (paper, BraTS setup): unlabelled voxels of ``labels`` ``(D, H, W)``
    where ``first_channel`` ``(D, H, W)`` (raw intensities of the image's first channel, same
    grid) is above ``cfg.brain_threshold`` of its robust range, holes filled, get
    ``cfg.brain_label``. Unchanged when the run has no brain label."""
    if cfg.brain_label is None:
        return labels
    brain = _brain_from_image(np.asarray(first_channel, dtype=np.float32), cfg.brain_threshold,
                              cfg.clip_percentiles[1])
    return np.where((labels == 0) & brain, np.int16(cfg.brain_label), labels).astype(np.int16)


def _final_labels(labels: np.ndarray, img: np.ndarray | None, cfg: PreprocessConfig) -> np.ndarray:
    """Step 1: ``label_map``, then ``brain_label``; every value left must be in ``mask_labels``."""
    labels = remap_labels(labels, cfg.label_map)
    if img is not None:
        labels = add_brain_label(labels, img[0], cfg)
    present = set(np.unique(labels).tolist()) - {0}
    unknown = sorted(present - set(cfg.mask_labels))
    if unknown:
        raise CohortError(
            f"label value(s) {unknown} are not in mask_labels {tuple(cfg.mask_labels)}; "
            "set mask_labels or label_map"
        )
    return labels


def intensity_bounds(channel: np.ndarray, fg: np.ndarray, percentiles: tuple[float, float],
                     labels: np.ndarray | None = None) -> tuple[float, float]:
    """``(lo, hi)``: the ``percentiles`` of ``channel`` inside ``fg``; with ``labels`` (same
    shape), widened to the same percentiles inside each label value > 0 on its own."""
    a, b = (float(v) for v in np.percentile(channel[fg], percentiles))
    if labels is not None:
        for v in np.unique(labels[labels > 0]):
            la, lb = (float(x) for x in np.percentile(channel[labels == v], percentiles))
            a, b = min(a, la), max(b, lb)
    return a, b


def _normalise(img: np.ndarray, fg: np.ndarray, percentiles: tuple[float, float],
               labels: np.ndarray | None = None) -> tuple[np.ndarray, list[float], list[float]]:
    """Step 3: per channel, clip to :func:`intensity_bounds` and map to [-1, 1]; (img, lo, hi)."""
    norm = np.empty_like(img)
    lo: list[float] = []
    hi: list[float] = []
    for c in range(img.shape[0]):
        a, b = intensity_bounds(img[c], fg, percentiles, labels)
        if b <= a:
            b = a + 1.0
        lo.append(a)
        hi.append(b)
        ch = norm[c]
        np.subtract(img[c], a, out=ch)
        np.multiply(ch, 2.0 / (b - a), out=ch)
        np.subtract(ch, 1.0, out=ch)
        np.clip(ch, -1.0, 1.0, out=ch)
    return norm, lo, hi


def _output_grid(fg: np.ndarray, affine: np.ndarray, cfg: PreprocessConfig
                 ) -> tuple[np.ndarray, np.ndarray, float, bool]:
    """Step 4: (index scale, index offset, zoom, truncated) of the output grid, centred on the
    head box of ``fg``; an axis that needs no resampling gets scale 1 and an integer offset."""
    target = np.asarray(cfg.target_shape, dtype=np.int64)
    spacing = np.asarray(spacing_from_affine(affine))
    b0, b1 = _head_box(fg)
    box = b1 - b0 + 1.0
    zoom = 1.0
    truncated = False
    if cfg.target_spacing is not None:
        out_spacing = np.asarray(cfg.target_spacing, dtype=np.float64)
        truncated = bool(np.any(box * spacing / out_spacing > target + 1e-6))
    else:
        zoom = float(min(1.0, np.min(target / box)))
        out_spacing = spacing / zoom
    scale = out_spacing / spacing
    exact = np.isclose(scale, 1.0, rtol=0, atol=1e-9)
    scale = np.where(exact, 1.0, scale)
    offset = (b0 + b1) / 2.0 - scale * (target - 1) / 2.0
    offset = np.where(exact, np.round(offset), offset)
    return scale, offset, zoom, truncated


def _rows(m: np.ndarray) -> tuple[tuple[float, ...], ...]:
    return tuple(tuple(float(v) for v in row) for row in np.asarray(m))


def preprocess_case(image: Volume | None, mask: Volume, cfg: PreprocessConfig) -> Preprocessed:
    """Preprocess one case (see the module docstring for the steps).

    ``image``: ``(C, D, H, W)`` on the same grid as ``mask`` ``(1, D, H, W)``, or ``None`` for
    a mask-only case (then no intensity bounds are recorded and ``brain_label`` is not added:
    the mask must carry it already). Raises :class:`CohortError` for grids that disagree,
    label values not covered by ``cfg.mask_labels`` or non-finite intensities.
    """
    img, labels = _checked_arrays(image, mask)
    labels = _final_labels(labels, img, cfg)

    # 2. orientation (exact)
    labels_r, aff_r, ornt = reorient(labels, mask.affine, cfg.orientation)
    img_r = apply_ornt(img, mask.affine, ornt)[0] if img is not None else None

    # 3. intensity bounds inside the head
    fg = labels_r > 0
    if not fg.any() and img_r is not None:
        fg = np.any(img_r != 0, axis=0)
    if not fg.any():
        fg = np.ones(labels_r.shape, bool)
    lo: list[float] = []
    hi: list[float] = []
    if img_r is not None:
        per_label = labels_r if cfg.intensity_bounds == "per_label" and labels_r.any() else None
        img_r, lo, hi = _normalise(img_r, fg, cfg.clip_percentiles, per_label)

    # 4. output grid centred on the head box
    scale, offset, zoom, truncated = _output_grid(fg, aff_r, cfg)
    shape_out = tuple(int(t) for t in cfg.target_shape)
    labels_o = resample(labels_r, scale, offset, shape_out, order=0, cval=0)
    img_o = None
    if img_r is not None:
        img_o = np.stack([resample(c, scale, offset, shape_out, order=1, cval=-1.0) for c in img_r])
    m = np.eye(4)
    m[:3, :3] = np.diag(scale)
    m[:3, 3] = offset

    record = GridRecord(
        original_shape=tuple(int(s) for s in labels.shape),  # type: ignore[arg-type]
        original_affine=_rows(mask.affine),
        ornt=tuple((float(a), float(f)) for a, f in ornt),
        reoriented_shape=tuple(int(s) for s in labels_r.shape),  # type: ignore[arg-type]
        index_scale=tuple(float(s) for s in scale),  # type: ignore[arg-type]
        index_offset=tuple(float(o) for o in offset),  # type: ignore[arg-type]
        output_shape=shape_out,  # type: ignore[arg-type]
        output_affine=_rows(aff_r @ m),
        lo=tuple(lo),
        hi=tuple(hi),
        zoom=zoom,
        truncated=truncated,
    )
    image_t = None if img_o is None else torch.from_numpy(np.ascontiguousarray(img_o, dtype=np.float32))
    return Preprocessed(image=image_t, labels=torch.from_numpy(labels_o.astype(np.int64)), record=record)


# ----------------------------------------------------------------------------- inverse


def to_original_grid(
    x: torch.Tensor | np.ndarray, record: GridRecord, *, is_label: bool = False
) -> Volume:
    """Map a network-grid volume back onto the case's original grid.

    ``x``: ``(C, D, H, W)`` (or ``(D, H, W)``) on ``record.output_shape``. Images are
    interpolated linearly (outside the output box: background, ``-1``) and mapped from
    ``[-1, 1]`` back to ``[lo, hi]`` per channel when the record has intensity bounds (a
    mask-only record keeps ``[-1, 1]``); labels (``is_label=True``) use nearest neighbour and
    come back as int16 ``(1, D, H, W)``. The result has ``record.original_shape`` and
    ``record.original_affine`` exactly.
    """
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or tuple(arr.shape[1:]) != tuple(record.output_shape):
        raise ValueError(f"expected (C, *{tuple(record.output_shape)}), got {tuple(arr.shape)}")
    scale = np.asarray(record.index_scale, dtype=np.float64)
    offset = np.asarray(record.index_offset, dtype=np.float64)
    inv_scale = 1.0 / scale
    inv_offset = -offset / scale
    shape_r = tuple(int(s) for s in record.reoriented_shape)
    ornt = np.asarray(record.ornt, dtype=np.float64)
    out = []
    for c in range(arr.shape[0]):
        if is_label:
            ch = resample(
                np.asarray(arr[c]).astype(np.int16), inv_scale, inv_offset, shape_r, order=0, cval=0
            )
        else:
            ch = resample(
                np.asarray(arr[c], dtype=np.float32),
                inv_scale,
                inv_offset,
                shape_r,
                order=1,
                cval=-1.0,
            )
            if record.lo:
                if len(record.lo) != arr.shape[0]:
                    raise ValueError(
                        f"record has {len(record.lo)} channel(s), volume has {arr.shape[0]}"
                    )
                lo, hi = record.lo[c], record.hi[c]
                ch = ((ch + 1.0) * 0.5 * (hi - lo) + lo).astype(np.float32)
        out.append(undo_ornt(ch, ornt))
    data = np.stack(out)
    assert tuple(data.shape[1:]) == tuple(record.original_shape)
    return Volume(data=data, affine=np.asarray(record.original_affine, dtype=np.float64))
