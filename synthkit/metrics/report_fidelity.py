"""The label-fidelity and tissue-realism part of the HTML evaluation report.

:func:`fidelity_section` returns the HTML (tables, the verdict of each set in words, figures
embedded) and writes the figures as PNG files beside ``index.html``:

* ``label_contrast.png``: per label, every case's contrast in the real set and each synthetic
  set (one dot per case, the median as a bar);
* ``label_slices.png``: for each label inside the head, a slice through it in a real case and in
  the synthetic volume generated from that case's mask (mask outlined);
* ``spectra.png``: the mean radially averaged power spectrum of each set's tissue;
* ``tissue_histograms.png``: the pooled z-scored tissue intensities of each set.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.metrics import tables

__all__ = ["fidelity_section"]

_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f"]


def _colour(k: int) -> str:
    return _COLOURS[k % len(_COLOURS)]


def _contrast_figure(result: dict, real: Any, synths: Sequence[Any], path: Path, save: Callable) -> bytes:
    from matplotlib.figure import Figure

    labels = [(name, e["label"]) for name, e in result["real"]["label_fidelity"].items()]
    sets = [real, *[s for s in synths if s.fidelity and any(m is not None for m in s.masks)]]
    fig = Figure(figsize=(1.2 + 1.1 * len(sets) * len(labels), 3.4))
    axes = np.atleast_1d(fig.subplots(1, len(labels)))
    for ax, (name, value) in zip(axes, labels):
        for k, s in enumerate(sets):
            v = np.array([np.nanmean(c.contrast[value]) for c in s.fidelity
                          if value in c.contrast and np.isfinite(c.contrast[value]).any()])
            v = v[np.isfinite(v)]
            x = k + np.linspace(-0.2, 0.2, max(len(v), 1))[: len(v)]
            ax.scatter(x, v, s=10, alpha=0.7, color=_colour(k))
            if v.size:
                ax.plot([k - 0.3, k + 0.3], [np.median(v)] * 2, color=_colour(k), lw=2)
        ax.axhline(0.0, color="#999", lw=0.8)
        ax.set_xticks(range(len(sets)))
        ax.set_xticklabels([s.name.removeprefix("control: ")[:22] for s in sets], rotation=35, ha="right", fontsize=7)
        ax.set_title(f"{name}: contrast per case", fontsize=9)
    fig.tight_layout()
    return save(fig, path)


def _slices_figure(result: dict, real: Any, synths: Sequence[Any], path: Path) -> bytes | None:
    from synthkit.metrics.evaluate import set_pairs
    from synthkit.metrics.label_fidelity import enclosing_label
    from synthkit.viz import montage

    inner = [(name, e["label"]) for name, e in result["real"]["label_fidelity"].items()]
    with_masks = [m for m in real.masks if m is not None]
    outer = enclosing_label(with_masks[0]) if with_masks else None
    inner = [(n, v) for n, v in inner if v != outer] or inner
    vols, masks, titles = [], [], []
    for name, value in inner[:2]:
        i = next((i for i, m in enumerate(real.masks) if m is not None and (m == value).sum() > 0), None)
        if i is None:
            continue
        vols.append(real.volumes[i][0])
        masks.append(real.masks[i])
        titles.append(f"{name}: real #{i + 1}")
        for s in synths:
            j = dict(set_pairs(real, s)).get(i)
            if j is None:
                continue
            vols.append(s.volumes[j][0])
            masks.append(s.masks[j] if s.masks[j] is not None else real.masks[i])
            titles.append(f"{name}: {s.name[:28]}")
    if not vols:
        return None
    montage(vols, masks, titles, path, focus_label=inner[0][1], window=(0.0, 1.0))
    return path.read_bytes()


def _spectra_figure(real: Any, synths: Sequence[Any], path: Path, save: Callable) -> bytes:
    from matplotlib.figure import Figure

    from synthkit.metrics.tissue import HF_CUTOFF, mean_spectrum

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    for k, s in enumerate([real, *synths]):
        spec = mean_spectrum([c.tissue for c in s.fidelity], 0)
        if spec.size:
            freq = np.arange(1, spec.size + 1) / (2 * spec.size)
            real_line = {"color": "black", "ls": "--", "lw": 2, "zorder": 5} if k == 0 else {"color": _colour(k), "lw": 1.2}
            ax.loglog(freq, spec, label=("real: " if k == 0 else "") + s.name[:30], **real_line)
    ax.axvline(HF_CUTOFF, color="#999", ls=":", lw=1)
    ax.set_xlabel("spatial frequency (cycles / voxel)")
    ax.set_ylabel("normalised power")
    ax.set_title("tissue power spectrum (patches inside the head, away from labels)", fontsize=9)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    fig.tight_layout()
    return save(fig, path)


def _tissue_hist_figure(real: Any, synths: Sequence[Any], path: Path, save: Callable) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    bins = np.linspace(-4, 4, 81)
    for k, s in enumerate([real, *synths]):
        vals = np.concatenate([c.tissue.samples[0] for c in s.fidelity]) if s.fidelity else np.zeros(0)
        if vals.size:
            ax.hist(vals, bins=bins, density=True, histtype="step", lw=2 if k == 0 else 1.2, color=_colour(k),
                    label=("real: " if k == 0 else "") + s.name[:30])
    ax.set_xlabel("tissue intensity (z-scored per volume)")
    ax.set_ylabel("density")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6)
    fig.tight_layout()
    return save(fig, path)


def _table(header: list[str], rows: list[list[str]]) -> str:
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def fidelity_section(result: dict[str, Any], real: Any, synths: Sequence[Any], out: Path,
                     save: Callable, img: Callable[[bytes, str], str]) -> str:
    """HTML of the fidelity part (empty when evaluate ran without it); ``save(fig, path)`` writes
    a matplotlib figure and returns its PNG bytes, ``img(bytes, alt)`` embeds one."""
    esc = html.escape
    if "fidelity" not in result["settings"]:
        return ""
    parts = ["<h2>Which metric caught what</h2><ul>"
             + "".join(f"<li>{esc(line)}</li>" for line in tables.verdict_lines(result))
             + f"</ul><p><small>{esc(tables.FIDELITY_RULES)}.</small></p>"]
    if result["real"].get("label_fidelity"):
        parts.append("<h2>Label fidelity</h2><p>Contrast: mean intensity in the label minus a thin shell "
                     "around it, over the enclosing region's sd (median over cases; x real). Dice: a segmenter "
                     "trained on the real set, against the mask each volume was generated from (x the "
                     "cross-fitted real ceiling).</p>"
                     + _table(tables.fidelity_header(result), tables.fidelity_rows(result)))
        parts.append(img(_contrast_figure(result, real, synths, out / "label_contrast.png", save), "label contrast"))
        slices = _slices_figure(result, real, synths, out / "label_slices.png")
        if slices:
            parts.append("<h3>A slice through the label, real and generated from its mask</h3>"
                         + img(slices, "label slices"))
    skipped = [f"{r['name']}: {r['label_fidelity_skipped']}" for r in [result["real"], *result["sets"]]
               if r.get("label_fidelity_skipped")]
    if skipped:
        parts.append("<p>Label fidelity skipped for " + esc("; ".join(skipped)) + ".</p>")
    parts.append("<h2>Tissue realism</h2><p>Distances to real (lower is better) at equal sample size; the real "
                 "row is the split-half reference: what real images score against each other.</p>"
                 + _table(tables.tissue_header(), tables.tissue_rows(result)))
    parts.append(img(_spectra_figure(real, synths, out / "spectra.png", save), "spectra"))
    parts.append(img(_tissue_hist_figure(real, synths, out / "tissue_histograms.png", save), "tissue histograms"))
    return "".join(parts)
