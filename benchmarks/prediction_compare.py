"""Epsilon- versus v-prediction at the same training budget on the demo cohort (issue 7).

Both runs use the demo model's recipe (the ``small`` preset at 32^3, cosine schedule, T = 250,
L1 loss, batch 4, AdamW 2e-4, EMA 0.999, bf16, seed 0) and differ only in ``--prediction``.
Each is sampled on held-out demo subjects (1000+) with DDIM (few steps, what the demo uses) and
with the paper's 250-step ancestral sampler, and scored with ``synthkit evaluate`` against the
real held-out cases (3D-FID/MMD on a seeded random MedicalNet extractor: compare rows with each
other only; paired MSE/MS-SSIM against the case whose mask conditioned the sample).

    python benchmarks/prediction_compare.py                       # 1,000 steps each (~25 min on 2 cores)
    python benchmarks/prediction_compare.py --steps 50 --n 4 --quick   # smoke test

Every step is a ``synthkit`` command, printed before it runs. Writes
``benchmarks/results/prediction_compare.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

from synthkit.demo.stages import HELD_OUT_FIRST

HERE = Path(__file__).resolve().parent
SYNTHKIT = [sys.executable, "-m", "synthkit"]


def run(cmd: list[str]) -> float:
    """Run a command (printed as ``synthkit ...``); return wall seconds."""
    print("$", " ".join(["synthkit", *cmd[len(SYNTHKIT):]] if cmd[: len(SYNTHKIT)] == SYNTHKIT else cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - t0


def recipe(prediction: str, steps: int) -> dict:
    """The demo model's training config with ``prediction`` and ``steps`` replaced."""
    from synthkit.pipeline import resolve_run

    cfg = json.loads((resolve_run("demo") / "config.json").read_text())
    cfg["diffusion"]["prediction"] = prediction
    cfg["train"].update(steps=steps, checkpoint_every=steps, preview_every=0, lr_final=cfg["train"]["lr"])
    return cfg


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1000, help="training steps per run")
    ap.add_argument("--n", type=int, default=16, help="held-out masks to sample and compare")
    ap.add_argument("--n-train", type=int, default=64, help="training subjects (demo subjects 0..n-1)")
    ap.add_argument("--ddim-steps", type=int, default=30)
    ap.add_argument("--quick", action="store_true", help="skip the 250-step ancestral sampler")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/synthkit_prediction_compare"))
    ap.add_argument("--out", type=Path, default=HERE / "results" / "prediction_compare")
    args = ap.parse_args()

    work = args.work
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    train, real = work / "train", work / "real"
    run([*SYNTHKIT, "cohort", "demo", str(train), "--n", str(args.n_train), "--size", "32", "--seed", "0", "--quiet"])
    run([*SYNTHKIT, "cohort", "demo", str(real), "--n", str(args.n), "--size", "32", "--seed", "0",
         "--first", str(HELD_OUT_FIRST), "--quiet"])

    samplers = [("ddim", args.ddim_steps)] + ([] if args.quick else [("ddpm", 250)])
    sets, rows = [], []
    for prediction in ("epsilon", "v"):
        cfg_path = work / f"config_{prediction}.json"
        cfg_path.write_text(json.dumps(recipe(prediction, args.steps), indent=2))
        run_dir = work / f"run_{prediction}"
        t_train = run([*SYNTHKIT, "train", str(train), "--out", str(run_dir), "--config", str(cfg_path), "--quiet"])
        log = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines() if line.strip()]
        tail = [r["loss"] for r in log[-100:]]
        for sampler, steps in samplers:
            synth = work / f"synth_{prediction}_{sampler}{steps}"
            t_sample = run([*SYNTHKIT, "sample", str(real), "--model", str(run_dir), "--out", str(synth), "--sampler", sampler,
                            "--steps", str(steps), "--seed", str(args.seed), "--quiet"])
            sets.append(synth)
            rows.append({"prediction": prediction, "sampler": f"{sampler.upper()}-{steps}",
                         "train_s": round(t_train, 1), "sample_s": round(t_sample, 1),
                         "final_loss": round(sum(tail) / len(tail), 4), "folder": synth.name})

    report = work / "metrics.json"
    run([*SYNTHKIT, "evaluate", str(real), *map(str, sets), "--json", str(report), "--seed", str(args.seed),
         "--quiet", "--no-cache"])
    res = json.loads(report.read_text())
    for r, s in zip(rows, res["sets"], strict=True):
        r.update(fid=s["fid"]["value"], fid_std=s["fid"]["std"], mmd=s["mmd"]["value"],
                 mse_paired=s.get("mse", {}).get("value"), ms_ssim_paired=s.get("ms_ssim", {}).get("value"),
                 diversity=(s.get("diversity") or {}).get("value"))

    from synthkit.io import discover_cohort, read_image, read_mask, read_nifti
    from synthkit.viz import montage

    case = discover_cohort(real).cases[0]
    vols, titles = [read_image(case).data[0]], [f"real {case.case_id}"]
    for r in rows:
        img = work / r["folder"] / "imagesTr" / f"{case.case_id}_s0_0000.nii.gz"
        vols.append(read_nifti(img).data[0])
        titles.append(f"{r['prediction']} {r['sampler']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    mask = read_mask(case).data[0]
    montage(vols, [mask] * len(vols), titles, args.out.with_suffix(".png"))

    doc = {"what": "epsilon vs v prediction at the same training budget (demo recipe, EMA weights)",
           "train_steps": args.steps, "n_train": args.n_train, "n_eval": args.n,
           "eval_cases": f"demo subjects {HELD_OUT_FIRST}-{HELD_OUT_FIRST + args.n - 1} (held out)", "seed": args.seed,
           "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
           "extractor": res["settings"].get("extractor"), "warning": res.get("warning"),
           "real_fid_floor": (res.get("real") or {}).get("fid_floor"), "rows": rows}
    args.out.with_suffix(".json").write_text(json.dumps(doc, indent=2) + "\n")
    lines = [f"# Epsilon vs v prediction, {args.steps} training steps each (demo recipe, 32^3)", "",
             (f"Trained on demo subjects 0-{args.n_train - 1}; evaluated on {args.n} held-out subjects "
             f"({HELD_OUT_FIRST}-{HELD_OUT_FIRST + args.n - 1}); EMA weights; one sample per mask, seed {args.seed}."), "",
             ("| prediction | sampler | final L1 (last 100) | 3D-FID | MMD | MSE (paired) | MS-SSIM (paired) "
             "| train s | sample s |"), "|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in rows:
        lines.append(f"| {r['prediction']} | {r['sampler']} | {r['final_loss']:.4f} | {r['fid']:.4f} ± "
                     f"{r['fid_std']:.4f} | {r['mmd']:.4f} | {r['mse_paired']:.4f} | {r['ms_ssim_paired']:.3f} "
                     f"| {r['train_s']:.0f} | {r['sample_s']:.0f} |")
    floor = doc["real_fid_floor"]
    if floor:
        lines += ["", f"Real-vs-real split-half FID floor: {floor['value']:.4f}"]
    lines += ["", str(res.get("warning") or ""), "",
              f"![one held-out mask: real, then each row's sample]({args.out.with_suffix('.png').name})", ""]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
