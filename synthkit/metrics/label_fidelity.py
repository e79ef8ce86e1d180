"""Label fidelity, part 1: does each label show up in the image where the mask puts it?

**Label contrast** (:func:`label_contrast`), per case, channel and label ``L``::

    contrast = (mean(I in L) - mean(I in shell)) / sd(I in T)

* ``E``, the *enclosing region*: every labelled voxel (``mask > 0``) when the mask has an
  enclosing label (:func:`enclosing_label`: a head or brain label), else the labelled voxels
  together with the image's intensity foreground
  (:func:`synthkit.preprocess.intensity.foreground`), so cohorts whose masks label only the lesion
  (BraTS) still have the brain around it;
* ``shell``: the voxels within ``shell`` voxels of ``L`` (city-block distance, i.e. ``shell``
  dilations with the 6-neighbourhood) that are not in ``L`` and lie in ``E``; for the enclosing
  label itself (the head) and a label with only background around it, the shell is the
  background next to it;
* ``T``, the *tissue*: ``E`` without the labels inside it (the tumour), so the scale does not
  depend on the labels being measured (a bright tumour would otherwise inflate it); the
  denominator makes the value unit-free, so a scanner's intensity scale, a generator's output
  range and the evaluation's resampling do not change it.

A tumour that the image does not show scores about 0; a bright enhancing rim scores high. The
measure is computed on the raw intensities, never on a clipped copy (clipping at a high
percentile flattens exactly the brightest label). Set level (:func:`contrast_summary`): the
median over cases with its bootstrap interval, the ratio of the set's median to the real median
(1 = as conspicuous as real), and, where synthetic volumes were generated from real masks, the
paired difference per mask.

Label names come from the real cohort's ``dataset.json`` (:func:`label_names`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from synthkit.metrics.bootstrap import median_interval

__all__ = ["SHELL_VOXELS", "contrast_summary", "enclosing_label", "enclosing_region", "label_contrast",
           "label_contrasts", "label_names"]

SHELL_VOXELS = 3
#: fewer voxels than this in the label or its shell: the case has nothing to measure (NaN)
MIN_VOXELS = 8
_CROSS = ndimage.generate_binary_structure(3, 1)


def enclosing_label(mask: np.ndarray) -> int | None:
    """The label the others sit in (a head or brain label): the one holding more than half of
    the labelled voxels and more than a tenth of the volume; None when there is none (BraTS
    masks label only the tumour's parts, each a few percent of the volume at most)."""
    values, counts = np.unique(mask[mask > 0], return_counts=True)
    if values.size == 0:
        return None
    k = int(np.argmax(counts))
    return int(values[k]) if counts[k] > 0.5 * counts.sum() and counts[k] > 0.1 * mask.size else None


def enclosing_region(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``E`` of the module docstring for one channel ``(D, H, W)`` and its label map."""
    from synthkit.preprocess.intensity import foreground

    return mask > 0 if enclosing_label(mask) is not None else (mask > 0) | foreground(image)


def _shell(region: np.ndarray, within: np.ndarray, width: int) -> np.ndarray:
    grown = ndimage.binary_dilation(region, structure=_CROSS, iterations=width)
    return grown & ~region & within


def label_contrast(image: np.ndarray, mask: np.ndarray, label: int, *, shell: int = SHELL_VOXELS,
                   enclosing: np.ndarray | None = None) -> float:
    """Contrast of ``label`` in ``image`` (both ``(D, H, W)``; see the module docstring).

    Returns NaN when the label has fewer than :data:`MIN_VOXELS` voxels or no shell, or the
    enclosing region is flat (sd 0)."""
    if image.shape != mask.shape:
        raise ValueError(f"image {image.shape} and mask {mask.shape} differ in shape")
    region = mask == label
    if int(region.sum()) < MIN_VOXELS:
        return float("nan")
    enc = enclosing_region(image, mask) if enclosing is None else enclosing
    # the enclosing label (the head) is compared with the background around it, the others
    # with the tissue around them
    outer = label == enclosing_label(mask)
    ring = _shell(region, ~enc if outer else enc & ~region, shell)
    if int(ring.sum()) < MIN_VOXELS and not outer:  # a lesion touching the background only
        ring = _shell(region, ~enc, shell)
    if int(ring.sum()) < MIN_VOXELS:
        return float("nan")
    img = np.asarray(image, dtype=np.float64)
    tissue = enc & ((mask == 0) | (mask == enclosing_label(mask)))
    sd = float(img[tissue if int(tissue.sum()) >= MIN_VOXELS else enc].std())
    if not sd > 0:
        return float("nan")
    return float((img[region].mean() - img[ring].mean()) / sd)


def label_contrasts(volume: np.ndarray, mask: np.ndarray | None, labels: Sequence[int], *,
                    shell: int = SHELL_VOXELS) -> np.ndarray:
    """``(C, D, H, W)`` volume and its label map -> ``(len(labels), C)`` contrasts (NaN where
    absent; all NaN without a mask)."""
    out = np.full((len(labels), volume.shape[0]), np.nan)
    if mask is None:
        return out
    for c, channel in enumerate(volume):
        enc = enclosing_region(channel, mask)
        for k, lab in enumerate(labels):
            out[k, c] = label_contrast(channel, mask, int(lab), shell=shell, enclosing=enc)
    return out


def label_names(dataset_json: Mapping[str, Any] | None, values: Sequence[int]) -> dict[int, str]:
    """``{value: name}`` for the non-zero ``values``: names from an nnU-Net ``dataset.json``
    (``{"labels": {"tumour": 2, ...}}``; region tuples take their first value), else
    ``label_<value>``."""
    named: dict[int, str] = {}
    for name, v in ((dataset_json or {}).get("labels") or {}).items():
        val = v[0] if isinstance(v, (list, tuple)) and v else v
        try:
            named.setdefault(int(val), str(name))
        except (TypeError, ValueError):
            continue
    return {int(v): named.get(int(v), f"label_{int(v)}") for v in values if int(v) != 0}


def _median_ratio(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, list[float | None]]:
    """``median(a) / median(b)`` and its two-sample bootstrap percentile interval."""
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if a.size == 0 or b.size == 0 or np.median(b) == 0:
        return float("nan"), [None, None]
    rng = np.random.default_rng(seed)
    ra = np.median(a[rng.integers(0, a.size, (n_boot, a.size))], axis=1)
    rb = np.median(b[rng.integers(0, b.size, (n_boot, b.size))], axis=1)
    ok = rb != 0
    reps = ra[ok] / rb[ok]
    ci = [float(x) for x in np.percentile(reps, [2.5, 97.5])] if reps.size else [None, None]
    return float(np.median(a) / np.median(b)), ci


def contrast_summary(values: np.ndarray, real: np.ndarray | None = None,
                     pairs: Sequence[tuple[int, int]] = (), *, n_boot: int = 1000, seed: int = 0) -> dict | None:
    """One label's contrast over a set: ``values`` ``(N, C)`` per case and channel (NaN where
    absent). The value is the median over cases of the channel-mean contrast; against ``real``
    (``(M, C)``) also ``ratio_to_real`` (median / real median, bootstrap interval) and, for
    ``pairs`` ``(real_index, set_index)``, the median paired difference (set - real)."""
    per_case = np.nanmean(values, axis=1) if values.size else np.zeros(0)
    per_case = per_case[np.isfinite(per_case)] if per_case.size else per_case
    if per_case.size == 0:
        return None
    out = median_interval(per_case, n_boot=n_boot, seed=seed).to_dict()
    out["per_channel_median"] = [float(x) if np.isfinite(x) else None for x in np.nanmedian(values, axis=0)]
    if real is not None:
        r = np.nanmean(real, axis=1)
        ratio, ci = _median_ratio(np.nanmean(values, axis=1), r, n_boot, seed)
        out["ratio_to_real"] = ratio if np.isfinite(ratio) else None
        out["ratio_ci95"] = ci
        if pairs:
            d = np.array([np.nanmean(values[j]) - np.nanmean(real[i]) for i, j in pairs])
            d = d[np.isfinite(d)]
            out["paired_difference"] = median_interval(d, n_boot=n_boot, seed=seed).to_dict() if d.size else None
    return out
