"""A plain, self-contained HTML privacy report (images inlined as base64 PNG, no scripts).

It shows the cohort scores, the attacks (re-identification of each volume's source, loss-based
membership inference), the calibration (rule, thresholds, reference, the planted-copy
self-test and whether it passed), what could not be computed, one row per synthetic volume,
and every flagged synthetic volume next to its nearest training subject (mirrored and shifted
into voxel alignment), in three orthogonal slices through the comparison grid.

For a report that leaves the institution (``synthkit anonymize``), ``share=True`` drops the
training images and training case ids: only synthetic ids and numbers remain.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.privacy.audit.volumes import PrivacyResult

_CSS = """body{font-family:sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:left}
th{background:#eee}tr.flag td{background:#fde2e2}.note{color:#555}code{background:#f4f4f4;padding:0 .2em}
figure{display:inline-block;margin:.5em}figcaption{font-size:90%}.fail{color:#a00;font-weight:bold}"""


def _fmt(v: Any) -> str:
    if v is None:
        return "&ndash;"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list):
        return html.escape(", ".join(str(x) for x in v))
    if isinstance(v, dict):
        return html.escape(", ".join(f"{k} {x}" for k, x in v.items()))
    return html.escape(str(v))


def slices_png(volumes: list[np.ndarray], titles: list[str]) -> str:
    """Base64 PNG: one row per volume (C, D, H, W) -> axial, coronal, sagittal middle slices of
    channel 0 (RAS voxel order, so sagittal = fixed first axis)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(volumes), 3, figsize=(6.6, 2.3 * len(volumes)), squeeze=False)
    for r, (v, title) in enumerate(zip(volumes, titles, strict=True)):
        x = np.asarray(v[0], dtype=np.float32)
        d, h, w = (s // 2 for s in x.shape)
        views = [("axial", x[:, :, w].T), ("coronal", x[:, h, :].T), ("sagittal", x[d, :, :].T)]
        lim = float(np.percentile(np.abs(x), 99.5)) or 1.0
        for c, (name, img) in enumerate(views):
            ax = axes[r, c]
            ax.imshow(img, cmap="gray", origin="lower", vmin=-lim, vmax=lim, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"{title}: {name}" if c == 0 else name, fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render(result: PrivacyResult, pairs: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, *,
           share: bool = False, title: str = "synthkit privacy report") -> str:
    """The report as one HTML string.

    ``pairs`` maps a flagged synthetic id to (synthetic prepared volume, aligned nearest
    training volume), both (C, D, H, W); ignored when ``share`` (no training data shown).
    """
    out = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>",
           f"<style>{_CSS}</style></head><body><h1>{html.escape(title)}</h1>"]
    out.append("<h2>Summary</h2><table>")
    rows = _summary_rows(result)
    out += [f"<tr><th>{html.escape(k)}</th><td>{_fmt(v)}</td></tr>" for k, v in rows]
    out.append("</table>")
    out += _attacks(result.attacks or {})
    if result.not_computed:
        out.append("<h3>Not computed</h3><ul>")
        out += [f"<li>{html.escape(s)}</li>" for s in result.not_computed]
        out.append("</ul>")

    cal = result.calibration
    out.append("<h2>Copy flag: rule and calibration</h2>")
    rate = (f"run-wide false-positive rate {_fmt(cal.get('alpha'))} over {_fmt(cal.get('n_synthetic'))} volume(s), "
            f"per test {_fmt(cal.get('alpha_per_test'))}" if cal.get("calibrated", True) else "no rate promised")
    out.append(f"<p>{html.escape(cal['rule'])}. Reference: <b>{html.escape(cal['reference'])}</b>; {rate}.</p>")
    if cal.get("promise"):
        cls = "" if cal.get("calibrated", True) else " class='fail'"
        out.append(f"<p{cls}>{html.escape(cal['promise'])}.</p>")
    out.append("<table><tr><th>statistic</th><th>flag when</th><th>threshold</th><th>normal / rank bound</th>"
               "<th>reference n</th><th>reference min / median / max</th><th>reference values beyond</th>"
               "<th>realised per-test rate (5% / 95%)</th></tr>")
    for name, th in cal["thresholds"].items():
        sign = "&gt;" if th["direction"] == "above" else "&lt;"
        ri = th.get("rate_interval") or {}
        out.append(f"<tr><td>{html.escape(name)}</td><td>{sign}</td><td>{_fmt(th['value'])}</td>"
                   f"<td>{_fmt(th.get('normal_bound'))} / {_fmt(th.get('rank_bound'))}</td>"
                   f"<td>{th['n_reference']}</td><td>{_fmt(th['reference_min'])} / {_fmt(th['reference_median'])} / "
                   f"{_fmt(th['reference_max'])}</td><td>{th['reference_flagged']}</td>"
                   f"<td>{_fmt(ri.get('q05'))} / {_fmt(ri.get('q95'))}</td></tr>")
    out.append("</table>")
    planted = cal.get("planted_copies")
    if planted:
        cls = "" if planted.get("passed", True) else " class='fail'"
        verdict = planted.get("verdict") or f"{planted['caught']} of {planted['planted']} planted copies caught"
        out.append(f"<p{cls}>{html.escape(verdict)}.</p><p class='note'>{html.escape(planted['description'])}; "
                   + ", ".join(f"{html.escape(k)}: {v['caught']}/{v['planted']}" for k, v in planted["by_kind"].items())
                   + "</p>")
    s = result.settings
    out.append(f"<p class='note'>Comparison grid {_fmt(list(s.get('shape', [])))}, shifts up to "
               f"&plusmn;{s.get('max_shift')} voxels, left-right mirror {'on' if s.get('flips') else 'off'}; "
               f"feature extractor: {_fmt(s.get('feature_extractor'))}.</p>")

    out.append("<h2>Synthetic volumes</h2><table><tr><th>id</th>")
    cols = ["identity", "ratio", "shape_dice", "similarity", "ssim", "feature_distance", "flipped", "shift",
            "flagged", "reason"]
    if any(v.get("source_rank") for v in result.volumes):  # anonymize: the source's rank per attacker statistic
        cols[-2:-2] = ["source_rank", "reidentified"]
    if not share:
        cols.insert(0, "nearest")
    out += [f"<th>{html.escape(k)}</th>" for k in cols]
    out.append("</tr>")
    for v in result.volumes:
        cls = " class='flag'" if v["flagged"] else ""
        out.append(f"<tr{cls}><td>{_fmt(v['id'])}</td>" + "".join(f"<td>{_fmt(v.get(k))}</td>" for k in cols) + "</tr>")
    out.append("</table>")

    flagged = result.flagged
    out.append(f"<h2>Flagged volumes ({len(flagged)})</h2>")
    if not flagged:
        out.append("<p>None.</p>")
    elif share:
        out.append("<p class='note'>Training images are not shown in a report meant to be shared.</p>")
    else:
        for v in flagged:
            pair = (pairs or {}).get(v["id"])
            if pair is None:
                continue
            png = slices_png(list(pair), [f"synthetic {v['id']}", f"training {v['nearest']}"])
            out.append(f"<figure><img src='data:image/png;base64,{png}' alt='flagged pair'>"
                       f"<figcaption>{_fmt(v['id'])} vs {_fmt(v['nearest'])}: similarity {_fmt(v['similarity'])}"
                       f"{', mirrored' if v['flipped'] else ''}, shift {_fmt(v['shift'])}; "
                       f"{html.escape(v['reason'])}</figcaption></figure>")
    out.append("</body></html>\n")
    return "".join(out)


def _summary_rows(result: PrivacyResult) -> list[tuple[str, Any]]:
    """(label, value) rows of the summary table."""
    c = result.cohort
    rows = [("synthetic volumes", c.get("n_synthetic")), ("training volumes", c.get("n_train")),
            ("holdout volumes", c.get("n_holdout")), ("flagged as possible copies", c.get("n_flagged"))]
    if "n_dropped" in c:
        rows[-1] = ("flagged by the gate (possible copies or re-identified)", c.get("n_flagged"))
        rows.append(("dropped by the gate", c["n_dropped"]))
    ct = c.get("closer_to_train")
    if ct:
        rows += [("fraction closer to train than to holdout", ct["fraction"]),
                 ("expected under no memorization", ct["expected"]),
                 ("binomial p-value (one-sided, greater)", ct["p_value"])]
    mia = c.get("membership_inference")
    if mia:
        rows += [("membership-inference AUC (0.5 = no leak)", mia["auc"]),
                 ("Mann-Whitney p-value (one-sided)", mia["p_value"])]
    for key, what in (("linkage_before_gate", " before the gate"), ("linkage", "")):
        link = (result.attacks or {}).get(key)
        if link and "best" in link:
            b = link["best"]
            rows += [(f"re-identification top-1{what} ({b['statistic']}; chance {b['top1']['chance']:.3g})",
                      b["top1"]["rate"]), (f"re-identification top-1{what}: binomial p-value", b["top1"]["p_value"])]
    mem = (result.attacks or {}).get("membership")
    if mem:
        rows += [("membership inference from the denoising loss: AUC", mem["auc"]),
                 (f"AUC {mem['confidence']:.0%} bootstrap interval", f"{mem['ci'][0]:.3f} to {mem['ci'][1]:.3f}")]
    return rows


def _attacks(attacks: dict[str, Any]) -> list[str]:
    """The attack tables (none when no attack ran)."""
    out: list[str] = []
    mem = attacks.get("membership")
    for key in ("linkage", "linkage_before_gate"):
        out += _linkage_table(attacks.get(key))
    if mem:
        out.append(f"<h2>Membership-inference attack</h2><p>{html.escape(mem['score'])} at timesteps "
                   f"{_fmt(mem.get('timesteps'))}: AUC {_fmt(mem['auc'])} ({mem['confidence']:.0%} interval "
                   f"{_fmt(mem['ci'][0])} to {_fmt(mem['ci'][1])}; 0.5 = no leak) on {mem['n_members']} training and "
                   f"{mem['n_nonmembers']} holdout cases; median error {_fmt(mem['member_error_median'])} vs "
                   f"{_fmt(mem['nonmember_error_median'])}; {html.escape(mem['test'])}, p = {_fmt(mem['p_value'])}.</p>")
    return out


def _linkage_table(link: dict[str, Any] | None) -> list[str]:
    """One re-identification table (none when nothing was linked)."""
    out: list[str] = []
    if link and link.get("statistics"):
        which = f": {html.escape(link['set'])}" if link.get("set") else ""
        out.append(f"<h2>Re-identification attack{which}</h2><p>For each of {link['n_linked']} synthetic volumes with a "
                   f"known source (links from {html.escape(str(link.get('links_from', '?')))}), the training subjects "
                   "are ranked by similarity; the attack succeeds when the source is among the top k. "
                   f"{html.escape(link['test'])}.</p><table><tr><th>attacker statistic</th><th>top-1</th>"
                   "<th>chance</th><th>p</th><th>top-5</th><th>chance</th><th>p</th><th>median rank</th></tr>")
        for name, r in link["statistics"].items():
            t1, t5 = r["top1"], r.get("top5", {})
            out.append(f"<tr><td>{html.escape(name)}</td><td>{_fmt(t1['rate'])}</td><td>{_fmt(t1['chance'])}</td>"
                       f"<td>{_fmt(t1['p_value'])}</td><td>{_fmt(t5.get('rate'))}</td><td>{_fmt(t5.get('chance'))}</td>"
                       f"<td>{_fmt(t5.get('p_value'))}</td><td>{_fmt(r['median_rank'])} (chance "
                       f"{_fmt(r['chance_median_rank'])})</td></tr>")
        out.append("</table>")
    elif link and link.get("note"):
        which = f": {html.escape(link['set'])}" if link.get("set") else ""
        out.append(f"<h2>Re-identification attack{which}</h2><p>{html.escape(link['note'])}.</p>")
    return out


def write_report(folder: str | Path, result: PrivacyResult,
                 pairs: dict[str, tuple[np.ndarray, np.ndarray]] | None = None, *, share: bool = False,
                 title: str = "synthkit privacy report") -> Path:
    """Write ``folder/privacy_report.html`` atomically; returns its path."""
    from synthkit.io.atomic import write_text

    return write_text(Path(folder) / "privacy_report.html", render(result, pairs, share=share, title=title))
