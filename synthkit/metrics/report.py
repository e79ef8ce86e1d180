"""A plain, self-contained HTML evaluation report (images embedded as base64 PNG).

:func:`write_report` writes ``DIR/index.html`` (plus the same figures as PNG files in ``DIR``):
the metric table (like Med-DDPM's Table I), precision / recall / density / coverage, the feature
extractor and the SHA-256 of its weights, the settings, a loud warning when the extractor was random, montages of real and synthetic volumes side by side (axial, coronal,
sagittal), intensity histograms and a 2D PCA projection of the feature clouds.
"""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.io.atomic import atomic_path, write_text
from synthkit.metrics.evaluate import LoadedSet
from synthkit.metrics.report_fidelity import fidelity_section
from synthkit.metrics.tables import PRDC_HEADER, TABLE_HEADER, prdc_rows, table_rows

__all__ = ["pca_2d", "write_report"]

_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2"]


def pca_2d(real: np.ndarray, others: Sequence[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
    """Project ``(N, F)`` feature sets onto the first two principal axes of the pooled features
    (each feature scaled by the real set's std; :class:`sklearn.decomposition.PCA`, exact SVD).
    Returns ``(N, 2)`` arrays."""
    from sklearn.decomposition import PCA

    pooled = np.concatenate([real, *others]).astype(np.float64)
    sd = real.std(0)
    sd[sd == 0] = 1.0
    z = pooled / sd
    proj = PCA(n_components=min(2, *z.shape), svd_solver="full").fit_transform(z)
    if proj.shape[1] < 2:
        proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    out, start = [], len(real)
    for o in others:
        out.append(proj[start : start + len(o)])
        start += len(o)
    return proj[: len(real)], out


def _fig_png(fig: Any, path: Path) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    return path.read_bytes()


def _histograms(real: LoadedSet, synths: Sequence[LoadedSet], path: Path) -> bytes:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 3.2))
    ax = fig.subplots()
    bins = np.linspace(0, 1, 65)
    for k, s in enumerate([real, *synths]):
        vals = np.concatenate([v[v > 0.02].ravel()[::7] for v in s.volumes[:50]])
        ax.hist(vals, bins=bins, density=True, histtype="step", lw=1.5,
                color=_COLOURS[k % len(_COLOURS)], label=("real: " if k == 0 else "") + s.name)
    ax.set_xlabel("intensity (per-volume [0, 1] scale), voxels > 0.02")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _fig_png(fig, path)


def _pca(real: LoadedSet, synths: Sequence[LoadedSet], path: Path, title: str) -> bytes:
    from matplotlib.figure import Figure

    r, others = pca_2d(real.features, [s.features for s in synths])
    fig = Figure(figsize=(4.5, 4))
    ax = fig.subplots()
    for k, (p, name) in enumerate([(r, "real: " + real.name), *((o, s.name) for o, s in zip(others, synths))]):
        ax.scatter(p[:, 0], p[:, 1], s=12, alpha=0.7, color=_COLOURS[k % len(_COLOURS)], label=name)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(f"{title} features, 2D PCA", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return _fig_png(fig, path)


def _montage(real: LoadedSet, synths: Sequence[LoadedSet], path: Path, n: int = 3) -> bytes:
    from synthkit.metrics.paired import pair_by_case_id
    from synthkit.viz import montage

    vols, masks, titles = [], [], []
    for i in range(min(n, len(real.volumes))):
        vols.append(real.volumes[i][0])
        masks.append(real.masks[i])
        titles.append(f"real #{i + 1}")
        for s in synths:
            pairs = dict(pair_by_case_id(real.ids, s.ids))
            j = pairs.get(i, i if i < len(s.volumes) else None)
            if j is None:
                continue
            vols.append(s.volumes[j][0])
            masks.append(real.masks[i] if i in pairs else None)
            titles.append(f"{s.name} #{i + 1}" + (" (paired)" if i in pairs else ""))
    montage(vols, masks, titles, path, window=(0.0, 1.0))
    return path.read_bytes()


def _img(data: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(data).decode()}">'


def write_report(result: dict[str, Any], real: LoadedSet, synths: Sequence[LoadedSet], out_dir: str | Path) -> Path:
    """Write ``out_dir/index.html`` (+ ``montage.png``, ``histograms.png``, ``pca.png``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figs = {
        "Real and synthetic volumes (axial / coronal / sagittal; mask outlined where paired)":
            _montage(real, synths, out / "montage.png"),
        "Intensity histograms": _histograms(real, synths, out / "histograms.png"),
        "Feature clouds": _pca(real, synths, out / "pca.png", result["settings"]["extractor"]["features"]),
    }
    esc = html.escape
    head = "".join(f"<th>{esc(h)}</th>" for h in TABLE_HEADER)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table_rows(result))
    warning = (f'<p class="warn">WARNING: {esc(result["warning"])}</p>' if result.get("warning") else "")
    ext = result["settings"]["extractor"]
    extractor = (f"<p>Features: <b>{esc(ext['name'])}</b> (<code>--features {esc(ext['features'])}</code>), "
                 f"weights SHA-256 <code>{esc(ext['weights_sha256'])}</code>; preprocessing: "
                 f"{esc(ext['preprocessing'])}.</p>")
    prdc_head = "".join(f"<th>{esc(h)}</th>" for h in PRDC_HEADER)
    prdc_body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in prdc_rows(result))
    def ci(d: dict | None) -> str:
        if not d or None in d["ci95"]:
            return "-"
        return "[{:.4g}, {:.4g}]".format(*d["ci95"])

    ci_rows = "".join(
        f"<tr><td>{esc(r['name'])}</td>"
        + "".join(f"<td>{ci(r.get(m))}</td>" for m in ("mse", "mmd", "fid", "diversity", "ms_ssim"))
        + "".join(f"<td>{ci((r.get('prdc') or {}).get(m))}</td>" for m in ("precision", "recall", "density", "coverage"))
        + "</tr>"
        for r in result["sets"]
    )
    sections = "".join(f"<h2>{esc(t)}</h2>{_img(b, t)}" for t, b in figs.items())
    fidelity = fidelity_section(result, real, synths, out, _fig_png, _img)
    skipped = {r["name"]: r["skipped"] for r in [result["real"], *result["sets"]] if r.get("skipped")}
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>synthkit evaluation</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}}
table{{border-collapse:collapse;margin:1em 0}}td,th{{border:1px solid #bbb;padding:4px 10px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}.warn{{background:#fdd;border:2px solid #c00;padding:8px;font-weight:bold}}
img{{max-width:100%}}pre{{background:#f4f4f4;padding:8px;overflow-x:auto;font-size:12px}}</style></head><body>
<h1>synthkit evaluation</h1>{warning}{extractor}
<p>Real set: <b>{esc(real.name)}</b> (n={result['real']['n']}); synthetic sets: {esc(', '.join(s.name for s in synths))}.
Values are point estimate ± std (bootstrap replicates for FID/MMD, items for MSE/MS-SSIM).</p>
{fidelity}
<h2>Feature distances and MS-SSIM (Table I of Med-DDPM)</h2>
<table><tr>{head}</tr>{body}</table>
<h3>Precision, recall, density, coverage (k = {result['settings']['prdc']['k']}, Naeem et al. 2020)</h3>
<table><tr>{prdc_head}</tr>{prdc_body}</table>
<h3>95% intervals</h3><table><tr><th>Method</th><th>MSE</th><th>MMD</th><th>3D-FID</th><th>MS-SSIM (diversity)</th><th>MS-SSIM (paired)</th><th>Precision</th><th>Recall</th><th>Density</th><th>Coverage</th></tr>{ci_rows}</table>
{sections}
<h2>Settings</h2><pre>{esc(json.dumps(result['settings'], indent=2))}</pre>
{'<p>Unreadable cases skipped (details on the terminal): ' + esc(json.dumps(skipped)) + '</p>' if skipped else ''}
</body></html>
"""
    return write_text(out / "index.html", page)
