"""The demo's single HTML page, ``OUT/index.html``: plain HTML with inline CSS, pictures as
relative PNG files in ``OUT/img``, links to the evaluation and privacy reports (relative)."""

from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Any

esc = html.escape

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;max-width:1200px;margin:1.5em auto;padding:0 1em;
color:#1d1d1f;line-height:1.45}
h1{margin-bottom:.1em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
.sub{color:#555;margin-top:0}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:4px 10px;text-align:right;
font-variant-numeric:tabular-nums}td:first-child,th:first-child{text-align:left}th{background:#f3f3f3}
.stages td,.stages th{text-align:left}.stages td:last-child{white-space:nowrap;text-align:right}.ok{color:#17803d;font-weight:600}.failed{color:#c00;font-weight:600}
.fail{background:#fdecec;border:1px solid #e0a0a0;padding:8px 12px;border-radius:4px}
.warn{background:#fff6dd;border:1px solid #e5c96a;padding:8px 12px;border-radius:4px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:10px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:6px;margin-bottom:10px}
figure{margin:0;background:#000;border-radius:4px;overflow:hidden}figure img{width:100%;display:block}
figcaption{background:#f3f3f3;color:#333;font-size:13px;padding:3px 8px}
.links a{margin-right:1.2em}.card{background:#fafafa;border:1px solid #ddd;padding:4px 16px;border-radius:4px}
code{background:#f0f0f0;padding:1px 4px;border-radius:3px}pre{background:#f4f4f4;padding:8px;overflow-x:auto}
.small{font-size:13px;color:#555}
"""


def _fig(src: str, caption: str) -> str:
    return f'<figure><img src="{esc(src)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'


def _failed(stage: Any) -> str | None:
    if stage is None:
        return '<p class="fail">This stage did not run.</p>'
    if stage.status != "ok":
        return f'<p class="fail">This stage failed: {esc(stage.error or "unknown error")}</p>'
    return None


def _fmt(d: dict | None, digits: int = 3) -> str:
    return "n/a" if not d or d.get("value") is None else f"{d['value']:.{digits}g}"


def _label_reading(model: dict[str, Any], real: dict[str, Any]) -> list[str]:
    """Sentences on the model's label fidelity (each label inside the head) and tissue."""
    out = []
    for name, e in (model.get("label_fidelity") or {}).items():
        c, d = e.get("contrast") or {}, e.get("dice") or {}
        ceiling = ((real.get("label_fidelity") or {}).get(name) or {}).get("dice") or {}
        if name == "head" or c.get("ratio_to_real") is None:
            continue
        dice = (f" A segmenter trained on real images finds it with Dice {_fmt(d)} against the mask, "
                f"{d['ratio_to_ceiling']:.2f}x what it reaches on real images it never saw ({_fmt(ceiling)})."
                if d.get("ratio_to_ceiling") is not None else "")
        out.append(f"Label fidelity, {name}: in the generated images the {name} stands out from the tissue "
                   f"around it {c['ratio_to_real']:.2f}x as much as in the real ones (median contrast "
                   f"{_fmt(c)} vs {_fmt(((real.get('label_fidelity') or {}).get(name) or {}).get('contrast'))})."
                   + dice + " A model that draws every label where its mask puts it scores near 1 on both.")
    t, rt = model.get("tissue") or {}, real.get("tissue") or {}
    if t.get("spectrum") and rt.get("spectrum"):
        out.append(f"Tissue: distance of the model's tissue power spectrum to real {_fmt(t['spectrum'])} dB, of its "
                   f"intensity histogram {_fmt(t.get('intensity_w1'))}, of its grey/white separation (CJV) "
                   f"{_fmt(t.get('cjv'))}; two halves of the real set differ by {_fmt(rt['spectrum'])}, "
                   f"{_fmt(rt.get('intensity_w1'))} and {_fmt(rt.get('cjv'))}. Up to twice those is as real.")
    return out


def metric_reading(result: dict[str, Any]) -> list[str]:
    """Short, honest sentences about the metric tables (plain text): label fidelity and tissue
    first, each metric's verdict on every set, and what 3D-FID can and cannot tell."""
    from synthkit.metrics.tables import FIDELITY_RULES, verdict_lines

    rows = result["sets"]
    model = rows[0]
    out = _label_reading(model, result["real"])
    if "fidelity" in result.get("settings", {}):
        out.append("Which metric flags which set (" + FIDELITY_RULES + "):")
        out.extend("- " + line for line in verdict_lines(result))
    if model.get("fid"):
        out.append(f"3D-FID ({_fmt(model['fid'])} for the model) compares pooled features of whole volumes: it can "
                   "rank a model first whose tumours are missing or whose brain is blotchy. The controls show "
                   "what it misses; judge a generator by label fidelity, tissue and the pictures, not by FID alone.")
    out.append("Lower is better for MSE, MMD and 3D-FID. Paired MS-SSIM compares each synthetic volume with the real "
               "image of the same mask (higher = closer) and favours the blurred control by construction; MS-SSIM "
               "diversity should be near the real set's value (much higher = samples look alike).")
    floor = result["real"].get("fid_floor")
    if floor:
        out.append(f"The real-vs-real split-half FID ({_fmt(floor)}) is what two halves of the same real cohort differ "
                   "by at this sample size.")
    n = result["real"]["n"]
    out.append(f"Every set has only about {n} volumes, so intervals are wide (95% intervals in the evaluation "
               "report); read differences between rows, not the absolute values.")
    if result.get("warning"):
        out.append("The feature extractor (MedicalNet) is RANDOMLY INITIALISED here (no pretrained weights were "
                   "given): 3D-FID and MMD are comparable between the rows of this table only, NOT to published "
                   "numbers. Set SYNTHKIT_MEDICALNET_WEIGHTS to a MedicalNet checkpoint for pretrained features.")
    else:
        ext = result.get("settings", {}).get("extractor", {})
        out.append(f"Features: {ext.get('name', '?')} (pretrained; weights SHA-256 "
                   f"{str(ext.get('weights_sha256'))[:12]}...). 3D-FID and MMD compare the rows of this table, "
                   "and runs on the same features; they are not comparable to published MedicalNet numbers.")
    return out


def _markdown(text: str, max_lines: int = 60) -> str:
    """A tiny, escaping Markdown subset (headings, bullets, paragraphs, **bold**, `code`)."""
    def inline(s: str) -> str:
        s = esc(s)
        s = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", s)
        return re.sub(r"`([^`]+)`", r"<code>\1</code>", s)

    parts, para, items = [], [], []

    def flush() -> None:
        if para:
            parts.append(f"<p>{inline(' '.join(para))}</p>")
            para.clear()
        if items:
            parts.append("<ul>" + "".join(f"<li>{inline(i)}</li>" for i in items) + "</ul>")
            items.clear()

    lines = text.splitlines()
    for line in lines[:max_lines]:
        s = line.strip()
        if m := re.match(r"(#{1,6})\s+(.*)", s):
            flush()
            level = min(6, len(m.group(1)) + 2)
            parts.append(f"<h{level}>{inline(m.group(2))}</h{level}>")
        elif m := re.match(r"[-*]\s+(.*)", s):
            if para:
                flush()
            items.append(m.group(1))
        elif not s:
            flush()
        else:
            if items:
                flush()
            para.append(s)
    flush()
    if len(lines) > max_lines:
        parts.append('<p class="small">(shortened; the full card is in <a href="model_card.md">model_card.md</a>)</p>')
    return "".join(parts)


def _latent_facts(gen: Any) -> list[tuple[str, str]]:
    """Rows for a latent run: the autoencoder the denoiser works in."""
    if getattr(gen, "kind", None) != "latent":
        return []
    n_ae = sum(p.numel() for p in gen.autoencoder.parameters())
    latent = " x ".join(str(s // gen.factor) for s in gen.config.preprocess.target_shape)
    return [("latent space", (f"KL autoencoder ({n_ae:,} parameters), {gen.factor}x per axis: "
                             f"{gen.latent_channels} channels x {latent}; the denoiser works there")),
            ("autoencoder sha256", gen.autoencoder_sha256[:16] + "…")]


def _model_section(ctx: Any, record: dict[str, Any]) -> str:
    gen = ctx.gen
    cfg = gen.config
    n_params = sum(p.numel() for p in gen.model.parameters())
    facts = [
        ("model", f"{record['model']} ({record['model_source']})"),
        ("preset", f"{cfg.preset} ({n_params:,} parameters)"),
        ("grid", " x ".join(map(str, cfg.preprocess.target_shape))),
        ("diffusion", (f"T = {cfg.diffusion.timesteps}, {cfg.diffusion.schedule} schedule, "
                      f"{cfg.diffusion.prediction}-prediction, {cfg.diffusion.loss} loss")),
        ("training", f"{cfg.train.steps} steps, batch {cfg.train.batch_size}, lr {cfg.train.lr:g}"),
        ("conditioning", f"mask labels {list(cfg.preprocess.mask_labels)} of "
                         + ", ".join(f"{k}={v}" for k, v in cfg.data.labels.items())),
        *_latent_facts(gen),
        ("sampling here", f"DDIM, {ctx.steps} steps, background held outside the head"),
        ("weights sha256", gen.weights_sha256[:16] + "…"),
    ]
    rows = "".join(f"<tr><td>{esc(k)}</td><td style='text-align:left'>{esc(v)}</td></tr>" for k, v in facts)
    card = ctx.out / "model_card.md"
    body = (f'<div class="card">{_markdown(card.read_text(errors="replace"))}</div>' if card.is_file()
            else '<p class="small">This model has no MODEL_CARD.md; the facts above come from its config.json.</p>')
    return f"<h2>The model</h2><table>{rows}</table>{body}"


def _metrics_section(e: Any) -> str:
    """The metric table of the evaluate stage and how to read it (or why it is missing)."""
    if e is None or e.status != "ok":
        return "<h2>Metrics</h2>" + (_failed(e) or "")
    def table(header: list[str], rows: list[list[str]], cls: str) -> str:
        head = "".join(f"<th>{esc(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table class='{cls}'><tr>{head}</tr>{body}</table>"

    fidelity = ("<h3>Label fidelity: is each label where its mask puts it?</h3>" + table(*e.info["fidelity"], "fidelity")
                if e.info.get("fidelity") else "")
    tissue = ("<h3>Tissue realism: distance to real (lower is better)</h3>" + table(*e.info["tissue"], "tissue")
              if e.info.get("tissue") else "")
    reading = "".join(f"<li>{esc(t)}</li>" for t in metric_reading(e.info["result"]))
    warn = ('<p class="warn">Feature extractor randomly initialised: FID/MMD are NOT comparable to '
            'published numbers.</p>' if e.info["result"].get("warning") else "")
    return (f"<h2>Metrics</h2>{warn}{fidelity}{tissue}<h3>Feature distances and MS-SSIM (Table I of the paper)</h3>"
            f"{table(e.info['header'], e.info['rows'], 'metrics')}"
            f"<p class='small'>value ± std; full details, intervals and figures in the "
            f"<a href=\"{esc(e.info['report'])}\">evaluation report</a> "
            f"(<a href=\"{esc(e.info['json'])}\">metrics.json</a>).</p><h3>How to read it</h3><ul>{reading}</ul>")


def _anonymized_cases(info: dict[str, Any]) -> str:
    """Whose tumours the anonymize stage took: every held-out case's, or the first n's."""
    n, of = info.get("cases"), info.get("of")
    return "each case's" if n is None or n == of else f"each of the first {n} of the {of} held-out cases'"


def _privacy_section(a: Any) -> str:
    """What the anonymize stage wrote, regenerated and dropped (or why it is missing)."""
    if a is None or a.status != "ok":
        return "<h2>Shareable synthetic cohort</h2>" + (_failed(a) or "")
    i = a.info
    checked = (f"checked every one against {esc(i['reference'])} for copies (memorization check)"
               if i.get("reference") else "did NOT check them for copies (the model's training cohort "
               "is unknown)")
    return ("<h2>Shareable synthetic cohort</h2>"
            f"<p><code>synthkit anonymize</code> put {_anonymized_cases(i)} tumour into a template head of another subject (its default, <code>--perturb-masks template</code>), generated one image per mask, {checked}, "
            f"and wrote the accepted ones under "
            f"opaque ids with clean headers as an nnU-Net dataset in <a href=\"{esc(i['folder'])}/\">"
            f"{esc(i['folder'])}/</a>: <b>{i['written']}</b> written, <b>{i['regenerated']}</b> "
            f"regenerated with a new seed after a flag, <b>{i['dropped']}</b> dropped"
            + (f", {i['failed']} failed" if i["failed"] else "") +
            f". Details: <a href=\"{esc(i['report'])}\">privacy report</a>.</p>"
            + (f"<p>{esc(i['rule'])}</p>" if i.get("rule") else ""))


def write_page(ctx: Any, record: dict[str, Any]) -> Path:
    """Write ``ctx.out/index.html`` from the stage results (:class:`synthkit.demo.pipeline.Context`)."""
    from synthkit.io.atomic import write_text

    st = ctx.stages
    sec: list[str] = []

    # stages
    rows = "".join(
        f"<tr><td>{i}. {esc(s.title)}</td><td class='{s.status}'>{esc(s.status)}</td>"
        f"<td>{esc(s.summary if s.status == 'ok' else s.error or '')}</td><td>{s.seconds:.1f} s</td></tr>"
        for i, s in enumerate(st.values(), 1))
    sec.append(f"<h2>What ran</h2><table class='stages'><tr><th>stage</th><th>status</th><th>what it did</th>"
               f"<th>time</th></tr>{rows}</table>")

    # real vs synthetic
    s = st.get("sample")
    sec.append("<h2>Real and synthetic, same masks</h2><p>Left: a real case of the demo cohort (held out: "
               "the model never saw it) with its mask "
               "outlined (yellow: head, red: tumour). Right: the image the model generated for that same mask. "
               "Slices go through the tumour.</p>")
    sec.append(_failed(s) or "".join(
        f'<div class="pair">{_fig(p["real"], "real " + p["case"])}'
        f'{_fig(p["synthetic"], "synthetic, generated from the mask of " + p["case"])}</div>'
        for p in s.info["pairs"]))

    # diversity
    if s is not None and s.status == "ok":
        figs = [_fig(s.info["diversity_real"], f"real {s.info['diversity_case']} (its mask conditions all samples)")]
        figs += [_fig(p, f"synthetic sample {k + 1} of {len(s.info['diversity'])}")
                 for k, p in enumerate(s.info["diversity"])]
        sec.append(f"<h2>Several samples for one mask</h2><p>The same mask of {esc(s.info['diversity_case'])}, "
                   f"different seeds: anatomy follows the mask, texture and intensity vary.</p>"
                   f"<div class='grid'>{''.join(figs)}</div>")
    else:
        sec.append(f"<h2>Several samples for one mask</h2>{_failed(s)}")

    # perturbed
    p = st.get("perturb")
    sec.append("<h2>Perturbed masks</h2><p>Masks edited with <code>synthkit masks</code> operations "
               f"(<code>{esc(ctx.sizes.perturb_ops)}</code>: the tumour moved inside the head, and deformed); "
               "left the real case the mask came from, right the image generated for the perturbed mask "
               "(the perturbed mask outlined).</p>")
    sec.append(_failed(p) or "".join(
        f'<div class="pair">{_fig(i["real"], "source: real " + i["source"])}'
        f'{_fig(i["synthetic"], i["case"] + ": " + i["ops"] + " -> generated image")}</div>'
        for i in p.info["items"]))

    e, a = st.get("evaluate"), st.get("anonymize")
    sec.append(_metrics_section(e))
    sec.append(_privacy_section(a))
    sec.append(_model_section(ctx, record))
    links = []
    if e is not None and e.status == "ok":
        links.append(f'<a href="{esc(e.info["report"])}">evaluation report</a>')
    if a is not None and a.status == "ok":
        links.append(f'<a href="{esc(a.info["report"])}">privacy report</a>')
    links += ['<a href="cohort/">real demo cohort</a>', '<a href="demo.json">demo.json</a>']
    n_failed = sum(x.status != "ok" for x in st.values())
    status = (f"<p class='fail'>{n_failed} stage(s) failed; see below.</p>" if n_failed else "")
    again = f"synthkit demo --out DIR --seed {ctx.seed}"
    if record["model_arg"]:
        again += f" --model {record['model_arg']}"
    if record["train_steps"]:
        again += f" --train-steps {record['train_steps']}"
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>synthkit demo</title><style>{CSS}</style></head><body>
<h1>synthkit demo</h1>
<p class="sub">Mask-conditioned 3D image synthesis (Med-DDPM) on a synthetic demo cohort built from the MNI152 template (no real subjects).
Model <b>{esc(record['model'])}</b>, seed {ctx.seed}, {record['total_seconds']:.0f} s in total.</p>
<p class="links">{' '.join(links)}</p>{status}
{''.join(sec)}
<h2>Run it again</h2><p><code>{esc(again)}</code> writes the same files (same seed, same volumes).
Stage sizes: {esc(', '.join(f'{k}={v}' for k, v in record['sizes'].items()))}.</p>
</body></html>
"""
    return write_text(ctx.out / "index.html", page)
