"""Quick-look PNG montages: one row per volume, axial / coronal / sagittal slices.

Arrays are ``(D, H, W)`` with the voxel axes ``i, j, k`` taken as x (left-right), y
(posterior-anterior), z (inferior-superior), i.e. RAS-like storage (what
:func:`synthkit.preprocess.preprocess_case` produces). Slices go through the tumour centroid when a mask is given (see
:func:`focus_point`), else through the centre. Mask labels are drawn as coloured contours.
Rendering uses matplotlib's Agg canvas directly (no pyplot state) and writes atomically.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.io.atomic import atomic_path

_COLOURS = ("#ffd400", "#ff3b30", "#34c759", "#0a84ff", "#ff9f0a", "#bf5af2", "#64d2ff")
VIEWS = ("axial", "coronal", "sagittal")


def _to_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _as_3d(x: Any, what: str) -> np.ndarray:
    arr = _to_numpy(x)
    while arr.ndim > 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 4:  # (C, D, H, W): show the first channel
        arr = arr[0]
    if arr.ndim != 3:
        raise ValueError(f"{what} must be (D, H, W) or (C, D, H, W), got shape {arr.shape}")
    return arr


def focus_point(
    mask: np.ndarray | None, shape: tuple[int, int, int], focus_label: int | None = None
) -> tuple[int, int, int]:
    """Voxel the slices go through.

    ``focus_label`` given: centroid of that label. Otherwise the centroid of every label except
    the largest one (the head or brain, so the lesion is shown for both the paper's
    head/tumour labels and BraTS' tumour parts + brain); with a single label, its centroid;
    with an empty or no mask, the volume centre.
    """
    centre = tuple(int(s // 2) for s in shape)
    if mask is None:
        return centre  # type: ignore[return-value]
    if focus_label is not None:
        sel = mask == focus_label
    else:
        vals, counts = np.unique(mask[mask > 0], return_counts=True)
        if len(vals) == 0:
            return centre  # type: ignore[return-value]
        sel = (mask > 0) & (mask != vals[np.argmax(counts)]) if len(vals) > 1 else mask > 0
    idx = np.argwhere(sel)
    if len(idx) == 0:
        return centre  # type: ignore[return-value]
    return tuple(round(float(v)) for v in idx.mean(0))  # type: ignore[return-value]


def _slices(arr: np.ndarray, p: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial (x-y at z), coronal (x-z at y), sagittal (y-z at x); transposed for imshow."""
    return [arr[:, :, p[2]].T, arr[:, p[1], :].T, arr[p[0], :, :].T]


def montage(
    volumes: Sequence[Any],
    masks: Sequence[Any | None] | None,
    titles: Sequence[str] | None,
    path: str | Path,
    *,
    focus_label: int | None = None,
    window: tuple[float, float] | None = None,
    cell_inches: float = 1.8,
    dpi: int = 100,
) -> Path:
    """Save a PNG grid: row ``r`` shows ``volumes[r]`` ``(D, H, W)`` (first channel of a
    ``(C, D, H, W)``) in three views, with ``masks[r]`` ``(D, H, W)`` outlined and
    ``titles[r]`` on the left. ``window`` fixes the grey range (e.g. ``(-1, 1)``); default: the
    1st-99th percentile of each volume. Returns ``path`` (written atomically)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    vols = [_as_3d(v, "volume") for v in volumes]
    if not vols:
        raise ValueError("montage needs at least one volume")
    mks = list(masks) if masks is not None else [None] * len(vols)
    tts = list(titles) if titles is not None else [""] * len(vols)
    if len(mks) != len(vols) or len(tts) != len(vols):
        raise ValueError("volumes, masks and titles must have the same length")
    mks = [None if m is None else _as_3d(m, "mask").astype(np.int32) for m in mks]
    for v, m in zip(vols, mks, strict=True):
        if m is not None and m.shape != v.shape:
            raise ValueError(f"mask shape {m.shape} differs from volume shape {v.shape}")

    fig = Figure(figsize=(3 * cell_inches, len(vols) * cell_inches), dpi=dpi, facecolor="black")
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(vols), 3, squeeze=False)
    fig.subplots_adjust(
        left=0.06, right=1, top=0.94 if len(vols) == 1 else 0.97, bottom=0, wspace=0.02, hspace=0.02
    )
    for r, (vol, mask, title) in enumerate(zip(vols, mks, tts, strict=True)):
        vol = vol.astype(np.float32)
        lo, hi = window if window is not None else np.percentile(vol, [1, 99])
        if hi <= lo:
            hi = lo + 1.0
        p = focus_point(mask, vol.shape, focus_label)  # type: ignore[arg-type]
        labels = [] if mask is None else [int(v) for v in np.unique(mask) if v != 0]
        for c, img in enumerate(_slices(vol, p)):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, origin="lower", interpolation="nearest")
            if mask is not None:
                msl = _slices(mask, p)[c]
                for li, lab in enumerate(labels):
                    sel = (msl == lab).astype(np.float32)
                    if sel.any() and not sel.all():
                        ax.contour(
                            sel, levels=[0.5], colors=[_COLOURS[li % len(_COLOURS)]], linewidths=0.8
                        )
            ax.set_axis_off()
            if r == 0:
                ax.set_title(VIEWS[c], color="white", fontsize=8, pad=2)
        axes[r, 0].text(
            -0.04,
            0.5,
            title,
            transform=axes[r, 0].transAxes,
            rotation=90,
            color="white",
            fontsize=7,
            ha="right",
            va="center",
        )
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", facecolor="black")
    return path
