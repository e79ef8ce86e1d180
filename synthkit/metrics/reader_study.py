"""A blinded reader-study kit: can experts tell real from synthetic slices?

:func:`write_kit` writes, under ``DIR``:

* ``DIR/shown/<random>.png`` — ``n`` real and ``n`` synthetic axial slices (first channel,
  middle of the foreground along the axial axis, same [0, 1] grey scale), shuffled, under random
  8-hex-digit names that reveal nothing; plus ``DIR/shown/answer_sheet.csv`` with columns
  ``image,answer`` to be filled with ``real`` or ``synthetic``. Only ``shown/`` goes to readers.
* ``DIR/answer_key.csv`` — ``image,truth,set``; kept apart, outside ``shown/``. No case ids or
  file names of the inputs are written anywhere.

:func:`score` reads a filled-in sheet and the key and reports accuracy, sensitivity
(synthetic called synthetic), specificity and a two-sided exact binomial test against chance.
``synthkit reader-score SHEET KEY`` prints the same.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.errors import UsageError
from synthkit.io.atomic import atomic_path, write_text

__all__ = ["axial_slice", "score", "write_kit"]


def axial_slice(vol: np.ndarray) -> np.ndarray:
    """Axial slice ``(W', H')`` (display orientation) of ``(C, D, H, W)`` or ``(D, H, W)``: first
    channel, index = middle of the foreground (> 0.02) extent along the last axis."""
    v = vol[0] if vol.ndim == 4 else vol
    fg = np.flatnonzero((v > 0.02).any(axis=(0, 1)))
    k = int((fg[0] + fg[-1]) // 2) if fg.size else v.shape[2] // 2
    return v[:, :, k].T


def _png(img: np.ndarray, path: Path) -> None:
    from matplotlib.image import imsave

    with atomic_path(path, suffix=".png") as tmp:
        imsave(tmp, np.clip(img, 0, 1), cmap="gray", vmin=0.0, vmax=1.0, origin="lower", format="png")


def write_kit(real: Any, synth: Any, n: int, out_dir: str | Path, *, seed: int = 0) -> dict[str, Any]:
    """Write the kit for ``n`` real and ``n`` synthetic volumes (``LoadedSet``-like objects with
    ``.volumes`` (C, D, H, W) in [0, 1] and ``.name``). Returns paths and counts."""
    if n < 1:
        raise UsageError(f"--reader-study N must be at least 1, got {n}")
    out = Path(out_dir)
    shown = out / "shown"
    if shown.exists() and any(shown.iterdir()):
        raise UsageError("reader-study folder already holds a kit; choose an empty folder", shown)
    rng = np.random.default_rng(seed)
    items = []
    for truth, s in (("real", real), ("synthetic", synth)):
        k = min(n, len(s.volumes))
        for i in rng.choice(len(s.volumes), k, replace=False):
            items.append((truth, s.name, s.volumes[int(i)]))
    order = rng.permutation(len(items))
    names = set()
    key_rows = []
    for pos in order:
        truth, set_name, vol = items[int(pos)]
        name = f"{int(rng.integers(0, 2**32)):08x}"
        while name in names:
            name = f"{int(rng.integers(0, 2**32)):08x}"
        names.add(name)
        _png(axial_slice(vol), shown / f"{name}.png")
        key_rows.append((f"{name}.png", truth, set_name))
    sheet = io.StringIO()
    w = csv.writer(sheet, lineterminator="\n")
    w.writerow(["image", "answer"])
    for row in key_rows:
        w.writerow([row[0], ""])
    write_text(shown / "answer_sheet.csv", sheet.getvalue())
    key = io.StringIO()
    w = csv.writer(key, lineterminator="\n")
    w.writerow(["image", "truth", "set"])
    w.writerows(key_rows)
    write_text(out / "answer_key.csv", key.getvalue())
    return {"shown": shown, "key": out / "answer_key.csv", "n_real": sum(r[1] == "real" for r in key_rows),
            "n_synthetic": sum(r[1] == "synthetic" for r in key_rows)}


def _read_csv(path: Path, needed: tuple[str, ...]) -> list[dict[str, str]]:
    if not path.is_file():
        raise UsageError("file not found", path)
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows or any(c not in rows[0] for c in needed):
        raise UsageError(f"expected a CSV with columns {', '.join(needed)}", path)
    return rows


def score(sheet: str | Path, key: str | Path) -> dict[str, Any]:
    """Score a filled-in answer sheet (``image,answer``; answers ``real``/``synthetic``, also
    ``r``/``s``/``fake``) against the key. Unanswered images are counted and left out."""
    from scipy.stats import binomtest

    truth = {r["image"].strip(): r["truth"].strip() for r in _read_csv(Path(key), ("image", "truth"))}
    norm = {"real": "real", "r": "real", "synthetic": "synthetic", "synth": "synthetic", "s": "synthetic",
            "fake": "synthetic"}
    tp = tn = fp = fn = 0
    unanswered = 0
    for r in _read_csv(Path(sheet), ("image", "answer")):
        img, ans = r["image"].strip(), (r["answer"] or "").strip().lower()
        if img not in truth:
            raise UsageError(f"image {img!r} is not in the answer key", sheet)
        if not ans:
            unanswered += 1
            continue
        if ans not in norm:
            raise UsageError(f"answer {ans!r} for {img} is not 'real' or 'synthetic'", sheet)
        said_synth, is_synth = norm[ans] == "synthetic", truth[img] == "synthetic"
        tp += said_synth and is_synth
        tn += (not said_synth) and (not is_synth)
        fp += said_synth and not is_synth
        fn += (not said_synth) and is_synth
    n = tp + tn + fp + fn
    if n == 0:
        raise UsageError("the answer sheet has no answers", sheet)
    correct = tp + tn
    return {"n": n, "unanswered": unanswered, "correct": correct, "accuracy": correct / n,
            "sensitivity": tp / (tp + fn) if tp + fn else float("nan"),
            "specificity": tn / (tn + fp) if tn + fp else float("nan"),
            "p_value": float(binomtest(correct, n, 0.5).pvalue),
            "note": "accuracy near 0.5 (p large) = readers cannot tell synthetic from real"}
