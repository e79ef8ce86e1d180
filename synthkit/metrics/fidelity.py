"""Label fidelity and tissue realism inside ``synthkit evaluate`` (the glue between the sets and
the metric modules :mod:`~synthkit.metrics.label_fidelity`, :mod:`~synthkit.metrics.consistency`
and :mod:`~synthkit.metrics.tissue`).

While a set is read (:func:`case_fidelity`, called by :func:`synthkit.metrics.evaluate.load_set`)
each case keeps only small things: its label contrasts, its tissue profile, and a copy on the
segmenter's grid. :func:`fidelity_metrics` then scores every set against the real one and
returns the JSON blocks ``label_fidelity.<label name>.{contrast, dice}`` and
``tissue.{intensity_w1, spectrum, cjv}`` for ``real`` and each set; ``real``'s Dice is the
cross-fitted ceiling and its tissue values the split-half reference.

Label fidelity needs masks: a set without them (a plain folder of volumes) gets
``label_fidelity: null`` and a one-line reason in ``label_fidelity_skipped``; the rest runs.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.metrics.label_fidelity import contrast_summary, label_contrasts, label_names
from synthkit.metrics.tissue import TissueProfile, tissue_metrics, tissue_profile
from synthkit.segmentation.multiclass import LabelSegConfig, normalise

__all__ = ["CaseFidelity", "FidelityOptions", "case_fidelity", "fidelity_metrics", "mask_on_grid"]

NO_MASKS = "no masks in this set (label fidelity needs the masks the volumes were generated from)"


@dataclass(frozen=True)
class FidelityOptions:
    """What :func:`case_fidelity` keeps and how the segmenter is trained or which one is used."""

    seg: LabelSegConfig = field(default_factory=LabelSegConfig)
    segmenter: str = "synthkit"  # or "nnunet:<model folder>"
    patch: int = 0  # tissue spectrum patch (voxels per side); 0: 16 on grids of 64 and more, else 8
    n_patches: int = 16
    repeats: int = 20

    def patch_for(self, grid: Sequence[int]) -> int:
        """The spectrum patch used on ``grid``."""
        return self.patch or (16 if min(grid) >= 64 else 8)


@dataclass
class CaseFidelity:
    """What one case keeps for label fidelity and tissue realism."""

    key: str  # content hash of image (+ mask): the case's identity for the segmenter, no name
    contrast: dict[int, np.ndarray]  # label value -> (C,) contrasts
    tissue: TissueProfile
    seg_image: np.ndarray | None  # (C, g, g, g) normalised
    seg_mask: np.ndarray | None  # (g, g, g) label values
    external_dice: dict[int, float] | None = None  # from a user's segmenter (nnU-Net), per label


def mask_on_grid(path: Path | None, grid: Sequence[int]) -> np.ndarray | None:
    """The case's label map ``(D, H, W)`` resampled to ``grid`` by nearest neighbour (None if absent)."""
    from synthkit.errors import SynthkitError
    from synthkit.io.nifti import read_nifti
    from synthkit.preprocess.grid import resize

    if path is None:
        return None
    try:
        m = read_nifti(path, is_label=True).data
    except SynthkitError:
        return None
    return resize(np.asarray(m).astype(np.int16), tuple(grid), label=True)[0]


def case_fidelity(on_grid: np.ndarray, mask: np.ndarray | None, content_key: str, opts: FidelityOptions,
                  *, seed: int = 0, external: Any = None, native: Any = None) -> CaseFidelity:
    """One case: ``on_grid`` ``(C, D, H, W)`` raw intensities on the evaluation grid, ``mask`` on
    the same grid (or None). ``external`` (a user's segmenter with ``predict(image, affine)``) is
    run on ``native`` (the volume as read) against its mask resampled there."""
    from synthkit.metrics.features import resize_to
    from synthkit.preprocess.grid import resize

    values = sorted(int(v) for v in np.unique(mask) if v != 0) if mask is not None else []
    contrasts = label_contrasts(on_grid, mask, values)
    g = (opts.seg.grid,) * 3
    seg_image = normalise(resize_to(on_grid, g)) if mask is not None else None
    seg_mask = resize(mask[None], g, label=True)[0] if mask is not None else None
    key = hashlib.sha256(f"{content_key}|{hashlib.sha256(mask.tobytes()).hexdigest() if mask is not None else ''}"
                         .encode()).hexdigest()
    ext = None
    if external is not None and mask is not None and native is not None:
        from synthkit.metrics.consistency import dice_per_label

        target = resize(mask[None], native.data.shape[1:], label=True)[0]
        pred = external.predict(native.data, native.affine)
        ext = dict(zip(values, dice_per_label(pred, target, values).tolist()))
    return CaseFidelity(key, {v: contrasts[k] for k, v in enumerate(values)},
                        tissue_profile(on_grid, mask, patch=opts.patch_for(on_grid.shape[1:]),
                                       n_patches=opts.n_patches, seed=seed),
                        seg_image, seg_mask, ext)


def _contrast_matrix(cases: Sequence[CaseFidelity], label: int, channels: int) -> np.ndarray:
    return np.stack([c.contrast.get(label, np.full(channels, np.nan)) for c in cases]) if cases else np.zeros((0, channels))


def _dice_summary(per_case: np.ndarray, ceiling: float | None, seed: int) -> dict | None:
    from synthkit.metrics.bootstrap import mean_interval

    v = per_case[np.isfinite(per_case)]
    if v.size == 0:
        return None
    out = mean_interval(v, seed=seed).to_dict()
    if ceiling:
        out["ratio_to_ceiling"] = float(v.mean() / ceiling)
    return out


def _dice_tables(real: Any, sets: Sequence[Any], pairs: Sequence[Sequence[tuple[int, int]]], labels: list[int],
                 opts: FidelityOptions, cache_dir: Path | None, device: str, progress: Any) -> tuple[np.ndarray, list]:
    """Per-case Dice ``(N, L)`` for real (the ceiling) and each set (None for a set without masks)."""
    if opts.segmenter.startswith("nnunet:"):
        table = lambda s: np.array([[(c.external_dice or {}).get(v, np.nan) for v in labels]
                                    for c in s.fidelity])
        return table(real), [table(s) if any(m is not None for m in s.masks) else None for s in sets]
    from synthkit.metrics.consistency import fit_crossfitted, set_dice

    cases = [c for c in real.fidelity if c.seg_mask is not None]
    cf = fit_crossfitted([c.seg_image for c in cases], [c.seg_mask for c in cases], [c.key for c in cases],
                         labels, opts.seg, cache_dir=cache_dir, device=device, progress=progress)
    real.segmenter_trained = cf.trained
    real_dice = set_dice(cf, [c.seg_image for c in real.fidelity], [c.seg_mask for c in real.fidelity],
                         [c.key for c in real.fidelity], device=device)
    out = []
    for s, prs in zip(sets, pairs):
        if not any(c.seg_mask is not None for c in s.fidelity):
            out.append(None)
            continue
        src: list[str | None] = [None] * len(s.fidelity)
        for i, j in prs:
            src[j] = real.fidelity[i].key
        out.append(set_dice(cf, [c.seg_image for c in s.fidelity], [c.seg_mask for c in s.fidelity], src,
                            device=device))
    return real_dice, out


def fidelity_metrics(real: Any, sets: Sequence[Any], pairs: Sequence[Sequence[tuple[int, int]]], opts: FidelityOptions,
                     *, dataset_json: dict | None = None, cache_dir: Path | None = None, device: str = "cpu",
                     seed: int = 0, progress: Any = None) -> tuple[dict, list[dict]]:
    """``(real block, one block per set)``, each ``{"label_fidelity": ..., "tissue": ...}``
    (module docstring). ``real``/``sets`` are :class:`~synthkit.metrics.evaluate.LoadedSet` with
    ``fidelity`` filled in."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN medians of absent labels
        t_real, t_sets = tissue_metrics([c.tissue for c in real.fidelity], [[c.tissue for c in s.fidelity] for s in sets],
                                        pairs, repeats=opts.repeats, seed=seed)
        values = sorted({v for c in real.fidelity for v in c.contrast})
        names = label_names(dataset_json, values)
        real_block: dict[str, Any] = {"tissue": t_real, "label_fidelity": None}
        blocks = [{"tissue": t, "label_fidelity": None} for t in t_sets]
        if not values:
            real_block["label_fidelity_skipped"] = NO_MASKS
            for b in blocks:
                b["label_fidelity_skipped"] = "the real set has no masks"
            return real_block, blocks
        chans = real.volumes[0].shape[0]
        ceiling, dice = (_dice_tables(real, sets, pairs, values, opts, cache_dir, device, progress)
                         if sum(m is not None for m in real.masks) >= 4 else (None, [None] * len(sets)))
        real_c = {v: _contrast_matrix(real.fidelity, v, chans) for v in values}
        real_block["label_fidelity"] = {}
        for k, v in enumerate(values):
            ceil = None if ceiling is None else _dice_summary(ceiling[:, k], None, seed)
            real_block["label_fidelity"][names[v]] = {
                "label": v, "contrast": contrast_summary(real_c[v], seed=seed), "dice": ceil}
        for b, s, prs, d in zip(blocks, sets, pairs, dice):
            if not any(m is not None for m in s.masks):
                b["label_fidelity_skipped"] = NO_MASKS
                continue
            b["label_fidelity"] = {}
            for k, v in enumerate(values):
                ceil = (real_block["label_fidelity"][names[v]]["dice"] or {}).get("value")
                b["label_fidelity"][names[v]] = {
                    "label": v,
                    "contrast": contrast_summary(_contrast_matrix(s.fidelity, v, chans), real_c[v], prs, seed=seed),
                    "dice": None if d is None else _dice_summary(d[:, k], ceil, seed)}
    return real_block, blocks
