"""Quality versus training budget of the demo model (issue 7).

For every EMA snapshot of a training run (``ema_step_XXXXXX.safetensors`` files saved next to
the run, or the run's own ``model.safetensors``), sample one volume per mask of the demo cohort
with DDIM and score it against the real cases with ``synthkit evaluate`` (3D-FID and MMD on
MedicalNet features, here from a seeded random extractor: compare rows with each other, not
with published numbers). Two trivial baselines (blurred real, noise inside the mask) and the
real-vs-real split-half floor are scored once for scale. Writes
``benchmarks/results/quality_curve.{json,md,png}``.

    python benchmarks/quality_curve.py --run RUN --snapshots SNAPDIR --work /tmp/qc
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from synthkit.demo.stages import HELD_OUT_FIRST

HERE = Path(__file__).resolve().parent
SYNTHKIT = [sys.executable, "-m", "synthkit"]


def run(cmd: list[str]) -> None:
    print("$", " ".join(cmd[2:] if cmd[:2] == SYNTHKIT[:2] else cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="run folder (config.json, intensity.json)")
    ap.add_argument("--snapshots", type=Path, help="folder of ema_step_*.safetensors")
    ap.add_argument("--work", type=Path, default=Path("/tmp/synthkit_quality_curve"))
    ap.add_argument("--n", type=int, default=16, help="demo cases (masks) to sample and compare")
    ap.add_argument("--steps", type=int, default=30, help="DDIM steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--every", type=int, default=1, help="use every k-th snapshot (the last one always)")
    ap.add_argument("--first", type=int, default=HELD_OUT_FIRST,
                    help=f"first demo subject to evaluate on (default {HELD_OUT_FIRST}: held out; the demo model saw 0-63)")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "quality_curve")
    args = ap.parse_args()

    cfg = json.loads((args.run / "config.json").read_text())
    size = cfg["preprocess"]["target_shape"][0]
    work = args.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    real = work / "real"
    run([*SYNTHKIT, "cohort", "demo", str(real), "--n", str(args.n), "--size", str(size), "--seed", "0",
         "--first", str(args.first), "--quiet"])

    from synthkit.metrics.baselines import blurred, noise_in_mask

    blurred(real, work / "baseline_blurred")
    noise_in_mask(real, work / "baseline_noise", seed=args.seed)

    snaps = sorted(args.snapshots.glob("ema_step_*.safetensors")) if args.snapshots else []
    snaps = (snaps[:: args.every] + ([snaps[-1]] if (len(snaps) - 1) % args.every else [])) if snaps else []
    if not snaps:
        snaps = [args.run / "model.safetensors"]
    rows = []
    for snap in snaps:
        m = re.search(r"(\d+)", snap.stem)
        step = int(m.group(1)) if m else -1
        model = work / f"model_{step:06d}"
        model.mkdir()
        for f in ("config.json", "intensity.json"):
            if (args.run / f).exists():
                shutil.copy(args.run / f, model / f)
        shutil.copy(snap, model / "model.safetensors")
        synth = work / f"synth_{step:06d}"
        t0 = time.perf_counter()
        run([*SYNTHKIT, "sample", str(real), "--model", str(model), "--out", str(synth), "--sampler", "ddim",
             "--steps", str(args.steps), "--seed", str(args.seed), "--quiet"])
        t_sample = time.perf_counter() - t0
        rows.append({"step": step, "synth": synth, "sample_s": round(t_sample, 1)})

    report = work / "metrics.json"
    run([*SYNTHKIT, "evaluate", str(real), *[str(r["synth"]) for r in rows],
         str(work / "baseline_blurred"), str(work / "baseline_noise"),
         "--json", str(report), "--seed", str(args.seed), "--quiet", "--no-cache"])
    res = json.loads(report.read_text())
    sets = res["sets"]
    out_rows = []
    for r, s in zip(rows, sets[: len(rows)], strict=True):
        out_rows.append({"step": r["step"], "fid": s["fid"]["value"], "fid_std": s["fid"]["std"],
                         "mmd": s["mmd"]["value"], "mmd_std": s["mmd"]["std"],
                         "ms_ssim_paired": s.get("ms_ssim", {}).get("value"),
                         "mse_paired": s.get("mse", {}).get("value"), "sample_s": r["sample_s"]})
    baselines = {s["name"]: {"fid": s["fid"]["value"], "mmd": s["mmd"]["value"]} for s in sets[len(rows):]}
    floor = res.get("real", {}).get("fid_floor")
    doc = {"what": "demo model quality vs training steps (EMA weights, DDIM sampling)",
           "cases": f"demo subjects {args.first}-{args.first + args.n - 1} (seed 0)", "n_cases": args.n, "size": size, "ddim_steps": args.steps, "seed": args.seed,
           "extractor": res["settings"].get("extractor"), "warning": res.get("warning"),
           "rows": out_rows, "baselines": baselines, "real_fid_floor": floor}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")

    lines = [f"# Demo model: quality vs training steps ({args.n} masks, {size}^3, DDIM-{args.steps})", "",
             f"Evaluated on demo subjects {args.first}-{args.first + args.n - 1} (held out from training).", "",
             "| step | 3D-FID | MMD | MS-SSIM (paired) | MSE (paired) |", "|--:|--:|--:|--:|--:|"]
    for r in out_rows:
        lines.append(f"| {r['step']} | {r['fid']:.4f} ± {r['fid_std']:.4f} | {r['mmd']:.4f} ± {r['mmd_std']:.4f} "
                     f"| {r['ms_ssim_paired'] or float('nan'):.3f} | {r['mse_paired'] or float('nan'):.4f} |")
    for name, b in baselines.items():
        lines.append(f"| {name} | {b['fid']:.4f} | {b['mmd']:.4f} | | |")
    if floor:
        lines.append("")
        lines.append(f"Real-vs-real split-half FID floor: {json.dumps(floor)}")
    lines += ["", str(res.get("warning") or ""), ""]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 2, figsize=(12, 8))
    axes = grid.ravel()
    steps = [r["step"] for r in out_rows]
    for ax, key in zip(axes[:2], ("fid", "mmd"), strict=True):
        ax.errorbar(steps, [r[key] for r in out_rows], yerr=[r[key + "_std"] for r in out_rows],
                    marker="o", label="demo model (EMA)")
        for (name, b), style in zip(baselines.items(), ("--", ":"), strict=False):
            ax.axhline(b[key], linestyle=style, color="grey", label=name)
        if key == "fid" and floor:
            ax.axhline(floor["value"], linestyle="-.", color="green", label="real vs real (split halves)")
        ax.set_xlabel("training step")
        ax.set_ylabel(key.upper() + " (lower is better)")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    for ax, key, label in ((axes[2], "mse_paired", "MSE to the real case (lower is better)"),
                           (axes[3], "ms_ssim_paired", "MS-SSIM to the real case (higher is better)")):
        ax.plot(steps, [r[key] for r in out_rows], marker="o")
        ax.set_xlabel("training step")
        ax.set_ylabel(label)
    fig.suptitle("synthkit demo model: quality vs training budget (random MedicalNet extractor)")
    fig.tight_layout()
    fig.savefig(args.out.with_suffix(".png"), dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
