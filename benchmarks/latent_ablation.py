"""Which lever makes latent Med-DDPM honour the mask? An ablation at 64^3 (issue 20, item 6).

Every row is trained with synthkit's own commands on demo subjects at 64^3 (16^3 latents), for
the SAME CPU time (``--budget-s`` CPU-seconds of one thread: the steps are the budget divided by
the row's own CPU seconds per step, measured first; fp32: bf16 autocast gave NaN within 10 steps on 16^3 latents), sampled on 16 held-out masks (subjects 1000-1015, never
trained on) and scored by ``synthkit evaluate`` with label fidelity and tissue metrics:

    baseline       today's demo-latent recipe: head intensity bounds, 8 latent channels, the mask
                   average-pooled to the latent grid, plain L1 loss, 64 subjects, small denoiser
    per_label      intensity bounds per label (autoencoder trained on them)       item 1
    4 channels     per_label and a 4-channel autoencoder                           item 5
    full mask      the one-hot mask space-to-depth onto the latent grid            item 2
    label weight   the tumour weighted x10 in the loss                             item 3
    guidance       10 % of steps without the mask; sampled at guidance 1, 2, 3     item 4
    medium         the medium denoiser (fewer steps in the same time)              item 5
    128 subjects   twice the training subjects                                     item 5
    best           the levers given by --best, together

    python benchmarks/latent_ablation.py --work /tmp/abl [--budget-s 600] [--rows baseline,full_mask]
    python benchmarks/latent_ablation.py --work /tmp/abl --best per_label,full_mask,label_weight

Writes ``benchmarks/results/latent_ablation.{md,json}`` and ``latent_ablation.png`` (one row per
set: the same held-out case, three views, the mask outlined). Runs found in ``--work`` are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, environment, markdown_table, write_results

SYNTHKIT = [sys.executable, "-m", "synthkit"]
SIZE = 64
# the autoencoders (each trained once on the 128 training subjects; 64^3 volumes, 32^3 crops, batch 4, bf16)
AUTOENCODERS = {"head8": ("head", 8), "label8": ("per_label", 8), "label4": ("per_label", 4)}
AE_STEPS = 1500
# the demo-latent recipe's denoiser settings, at 64^3
BASE_TRAIN = ["--preset", "small", "--prediction", "v", "--loss", "l1", "--batch-size", "4", "--lr", "4e-4",
              "--lr-final", "4e-5", "--ema-decay", "0.999", "--seed", "0", "--checkpoint-every", "500",
              "--preview-every", "0"]
ROWS: dict[str, dict] = {
    "baseline": {"ae": "head8", "subjects": 64, "flags": []},
    "per_label": {"ae": "label8", "subjects": 64, "flags": []},
    "4_channels": {"ae": "label4", "subjects": 64, "flags": []},
    "full_mask": {"ae": "head8", "subjects": 64, "flags": ["--cond-factor", "4"]},
    "label_weight": {"ae": "head8", "subjects": 64, "flags": ["--label-weight", "1", "--label-weight", "10"]},
    "guidance": {"ae": "head8", "subjects": 64, "flags": ["--cond-drop", "0.1"], "guidance": [1.0, 2.0, 3.0]},
    "medium": {"ae": "head8", "subjects": 64, "flags": ["--preset", "medium"]},
    "128_subjects": {"ae": "head8", "subjects": 128, "flags": []},
}


def _run(cmd: list[str], log: Path | None = None) -> dict:
    """Run a synthkit command on one thread; wall and CPU seconds of that child alone (wait4, so
    commands may run side by side)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    with open(log, "w") if log else open(os.devnull, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": usage.ru_utime + usage.ru_stime}


def _cohorts(work: Path) -> dict[str, Path]:
    out = {"held": work / "held64", 64: work / "train64_64", 128: work / "train64"}
    specs = {"held": ["--n", "16", "--first", "1000"], 64: ["--n", "64"], 128: ["--n", "128"]}
    for key, path in out.items():
        if not (path / "dataset.json").is_file():
            _run([*SYNTHKIT, "cohort", "demo", str(path), "--size", str(SIZE), "--seed", "0", *specs[key]])
    return out


def _autoencoder(work: Path, name: str, cohort: Path) -> tuple[Path, dict]:
    bounds, channels = AUTOENCODERS[name]
    out = work / f"ae_{name}"
    cost: dict = {}
    if not (out / "model.safetensors").is_file():
        cost = _run([*SYNTHKIT, "autoencoder", "train", str(cohort), "--out", str(out), "--shape", *[str(SIZE)] * 3,
                     "--crop", "32", "--batch-size", "4", "--precision", "bf16", "--steps", str(AE_STEPS),
                     "--latent-channels", str(channels), "--intensity-bounds", bounds, "--threads", "1",
                     "--checkpoint-every", "250", "--seed", "0", "--quiet", "--cache-dir", str(work / f"cache_{bounds}")])
    return out, cost


def _cpu_per_step(calib: Path, common: list[str]) -> float:
    """CPU seconds per training step of this row's settings: the CPU-time difference of a 40-step
    and a 10-step run (after a 3-step run that fills the latent cache). CPU time, not wall time,
    so that other processes on the machine do not change a row's budget."""
    record = calib / "cpu_per_step.json"
    if record.is_file():
        return float(json.loads(record.read_text())["cpu_per_step"])
    cpu = {}
    for n in (3, 10, 40):
        cpu[n] = _run([*common, "--out", str(calib / f"s{n}"), "--steps", str(n)])["cpu_s"]
    value = (cpu[40] - cpu[10]) / 30
    calib.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"cpu_per_step": value, "cpu_s": cpu}))
    return value


def _train_row(work: Path, name: str, spec: dict, cohorts: dict, budget_s: float) -> dict:
    ae = work / f"ae_{spec['ae']}"
    bounds = AUTOENCODERS[spec["ae"]][0]
    cohort = cohorts[spec["subjects"]]
    common = [*SYNTHKIT, "train", str(cohort), "--autoencoder", str(ae), *BASE_TRAIN, *spec["flags"],
              "--precision", "fp32", "--quiet", "--cache-dir", str(work / f"cache_{bounds}")]
    sps = _cpu_per_step(work / "calib" / name, common)
    steps = max(100, int(budget_s / sps))
    run = work / "runs" / name
    run.parent.mkdir(parents=True, exist_ok=True)
    record = work / "runs" / f"{name}.json"
    if record.is_file():
        return json.loads(record.read_text())
    resume = ["--resume"] if (run / "config.json").is_file() else []
    cost = _run([*common, "--out", str(run), "--steps", str(steps), *resume], work / "runs" / f"{name}.log")
    info = {"steps": steps, "s_per_step": sps, **cost}
    record.write_text(json.dumps(info))
    return info


def _sample(work: Path, name: str, guidance: float, held: Path) -> tuple[str, Path]:
    label = name if guidance == 1.0 else f"{name}_g{guidance:g}"
    out = work / "samples" / label
    if not (out / "manifest.json").is_file():
        _run([*SYNTHKIT, "sample", str(held), "--model", str(work / "runs" / name), "--out", str(out), "--sampler",
              "ddim", "--steps", "25", "--seed", "0", "--guidance", str(guidance), "--quiet"])
    return label, out


def _picture(sets: list[tuple[str, Path]], held: Path, path: Path, case: str = "case_1003") -> None:
    from synthkit.io.nifti import read_nifti
    from synthkit.viz import montage

    mask = read_nifti(held / "labelsTr" / f"{case}.nii.gz", is_label=True).data[0]
    vols, titles = [read_nifti(held / "imagesTr" / f"{case}_0000.nii.gz").data[0]], ["real"]
    for label, folder in sets:
        vols.append(read_nifti(folder / "imagesTr" / f"{case}_s0_0000.nii.gz").data[0])
        titles.append(label)
    montage(vols, [mask] * len(vols), titles, path, focus_label=2)


def _table(res: dict, rows: dict, names: list[str]) -> str:
    by = {s["name"]: s for s in res["sets"]}
    real = res["real"]
    head = ["set", "steps (CPU s/step)", "CPU s of training", "tumour contrast (x real)", "tumour Dice (x ceiling)",
            "spectrum dB", "intensity W1", "FID"]
    out = []
    for label in names:
        s = by.get(label)
        if s is None:
            continue
        base = label.split("_g")[0] if label not in rows else label
        info = rows.get(base, {})
        tum = (s.get("label_fidelity") or {}).get("tumour") or {}
        t = s.get("tissue") or {}
        c, d = tum.get("contrast") or {}, tum.get("dice") or {}

        def f(x, k="value", n=2):
            return "-" if not x or x.get(k) is None else f"{x[k]:.{n}f}"

        out.append([label, f"{info.get('steps', '-')} ({info.get('s_per_step', 0):.3f})", f"{info.get('cpu_s', 0):.0f}",
                    f"{f(c)} ({f(c, 'ratio_to_real')}x)", f"{f(d)} ({f(d, 'ratio_to_ceiling')}x)",
                    f(t.get("spectrum")), f(t.get("intensity_w1"), n=3), f(s.get("fid"), n=3)])
    tum, t = real["label_fidelity"]["tumour"], real["tissue"]
    out.append(["real (ceiling / split-half reference)", "", "", f"{tum['contrast']['value']:.2f}",
                f"{tum['dice']['value']:.2f}", f"{t['spectrum']['value']:.2f}", f"{t['intensity_w1']['value']:.3f}",
                f"{real.get('fid_floor', {}).get('value', float('nan')):.3f}" if isinstance(real.get("fid_floor"), dict)
                else str(real.get("fid_floor", "-"))])
    return markdown_table(head, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--budget-s", type=float, default=600.0, help="CPU seconds (one thread) per denoiser run")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--jobs", type=int, default=1, help="denoiser runs side by side (one thread each)")
    ap.add_argument("--best", default="", help="comma-separated levers to combine into the row 'best'")
    args = ap.parse_args()

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    cohorts = _cohorts(work)
    rows = {k: dict(ROWS[k]) for k in args.rows.split(",") if k}
    if args.best:
        levers = [ROWS[k] for k in args.best.split(",")]
        best = {"ae": "head8", "subjects": 64, "flags": [], "guidance": [1.0]}
        for lv in levers:
            best["ae"] = lv["ae"] if lv["ae"] != "head8" else best["ae"]
            best["subjects"] = max(best["subjects"], lv["subjects"])
            best["flags"] += lv["flags"]
            best["guidance"] = sorted(set(best["guidance"]) | set(lv.get("guidance", [1.0])))
        rows["best"] = best
    ae_cost = {}
    for name in sorted({r["ae"] for r in rows.values()}):
        ae_cost[name] = _autoencoder(work, name, cohorts[128])[1]  # every subject the rows may train on
    info = {}
    with ThreadPoolExecutor(args.jobs) as pool:  # each run is one thread; the budget is CPU time
        futures = {name: pool.submit(_train_row, work, name, spec, cohorts, args.budget_s) for name, spec in rows.items()}
        for name, fut in futures.items():
            info[name] = fut.result()
            print(name, info[name], flush=True)
    sets = [_sample(work, name, g, cohorts["held"]) for name, spec in rows.items() for g in spec.get("guidance", [1.0])]
    res_path = work / "evaluate.json"
    _run([*SYNTHKIT, "evaluate", str(cohorts["held"]), *[str(p) for _, p in sets], "--json", str(res_path),
          "--report", str(work / "report.html"), "--quiet", "--seg-grid", str(SIZE)], work / "evaluate.log")
    res = json.loads(res_path.read_text())
    res = res.get("results", res)
    for s, (label, _) in zip(res["sets"], sets, strict=True):
        s["name"] = label
    _picture(sets, cohorts["held"], RESULTS / "latent_ablation.png")
    env = environment(1)
    table = _table(res, info, [label for label, _ in sets])
    text = (f"Latent Med-DDPM ablation at {SIZE}^3 (16^3 latents), issue 20 item 6. Each denoiser trained for "
            f"{args.budget_s:.0f} CPU-seconds of one thread (steps = budget / its own CPU s/step, fp32), "
            f"sampled DDIM-25 on 16 held-out masks (demo subjects 1000-1015), scored by `synthkit evaluate` "
            f"(label fidelity: cross-fitted segmenter on the real held-out set; tissue: split-half reference).\n\n"
            f"{table}\n\nCPU: {env['cpu']}, {env['cpu_capability']}, native bf16 {env['bf16_native']}, 1 thread.\n"
            f"Autoencoders ({AE_STEPS} steps of 32^3 crops, batch 4): {json.dumps(ae_cost)}\n")
    print(text)
    write_results("latent_ablation", {"rows": rows, "train": info, "autoencoders": ae_cost, "evaluate": res,
                                      "budget_s": args.budget_s, "environment": env}, text)


if __name__ == "__main__":
    main()
