"""The paper's Table I at an equal CPU-time budget: Med-DDPM vs Pix2Pix vs DiscoGAN on the demo
cohort, scored on held-out masks with the pretrained (deepbet) features.

    python benchmarks/table1.py --minutes 60              # each model trains ~60 min of CPU time
    python benchmarks/table1.py --minutes 0.5 --n-test 6  # smoke test

1. ``synthkit cohort demo``: training subjects 0..N-1 and held-out subjects 1000+ (test masks).
2. Per model, a short probe run measures the steady-state seconds per optimizer step (from the
   run's ``log.jsonl`` ``time``); the real run then trains ``minutes * 60 / step_s`` steps from
   scratch, so every model gets the same training time (the table reports the time each run
   actually logged). Med-DDPM uses the shipped demo model's recipe (its ``config.json``: small
   preset, 32^3, v-prediction, EMA) with the step count replaced; the GANs use ``--preset small``
   at 32^3. All in fp32 on the CPU with ``--threads`` torch threads.
3. ``synthkit sample`` on the test masks (Med-DDPM with DDIM ``--ddim-steps``), the two trivial
   baselines, and ``synthkit evaluate --features deepbet``: FID, MMD, precision/recall/density/
   coverage, MS-SSIM diversity, paired MSE and MS-SSIM.

Writes benchmarks/results/table1.{json,md,png}.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
SYNTHKIT = [sys.executable, "-m", "synthkit"]
MODELS = ("ddpm", "pix2pix", "discogan")
LABEL = {"ddpm": "Med-DDPM", "pix2pix": "Pix2Pix", "discogan": "DiscoGAN"}


def _run(*args: str) -> None:
    print("$ synthkit", " ".join(args), flush=True)
    subprocess.run([*SYNTHKIT, *args], check=True)


def _log_times(run: Path) -> list[float]:
    rows = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines() if line.strip()]
    return [float(r["time"]) for r in rows if "time" in r]


def _train_args(model: str, cohort: Path, out: Path, steps: int, a) -> list[str]:
    args = ["train", str(cohort), "--out", str(out), "--steps", str(steps), "--seed", str(a.seed),
            "--device", "cpu"]  # GANs always train in fp32; Med-DDPM's precision is set in its config
    if model == "ddpm":
        cfg = json.loads((ROOT / "synthkit" / "assets" / "models" / "demo" / "config.json").read_text())
        cfg["train"].update(steps=steps, precision="fp32", checkpoint_every=max(50, steps // 4),
                            preview_every=max(100, steps))
        path = out.parent / f"{out.name}_config.json"
        path.write_text(json.dumps(cfg, indent=2))
        return [*args, "--config", str(path)]
    return [*args, "--model", model, "--preset", "small", "--shape", "32", "32", "32",
            "--checkpoint-every", str(max(50, steps // 4))]


def _seconds_per_step(model: str, cohort: Path, work: Path, a) -> float:
    probe = work / f"probe_{model}"
    _run(*_train_args(model, cohort, probe, a.probe_steps, a))
    t = _log_times(probe)
    shutil.rmtree(probe)
    return (t[-1] - t[1]) / (len(t) - 2)  # the first step includes warm-up


def _train(model: str, cohort: Path, work: Path, a) -> dict:
    per = _seconds_per_step(model, cohort, work, a)
    steps = max(a.probe_steps, math.floor(a.minutes * 60 / per))
    run = work / f"run_{model}"
    t0, cpu0 = time.perf_counter(), _children_cpu_s()
    _run(*_train_args(model, cohort, run, steps, a))
    return {"model": model, "seconds_per_step": per, "steps": steps, "train_s_logged": _log_times(run)[-1],
            "train_wall_s": time.perf_counter() - t0, "train_cpu_s": _children_cpu_s() - cpu0, "run": run}


def _children_cpu_s() -> float:
    """CPU seconds (user + system) used so far by finished child processes: the training runs'
    own CPU time, which stays comparable when the machine's load changes during the benchmark."""
    import resource

    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def _plot(rows: list[dict], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from synthkit.io.atomic import atomic_path

    metrics = [("fid", "FID (deepbet) ↓"), ("precision", "precision ↑"), ("recall", "recall ↑"),
               ("ms_ssim", "paired MS-SSIM ↑")]
    fig = Figure(figsize=(11, 3))
    FigureCanvasAgg(fig)
    for ax, (key, title) in zip(fig.subplots(1, len(metrics)), metrics):
        vals = [r.get(key) for r in rows]
        ax.bar(range(len(rows)), [v if v is not None else 0 for v in vals], color="#1f77b4")
        ax.set_xticks(range(len(rows)), [r["set"] for r in rows], rotation=30, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)


def main() -> None:
    from synthkit.demo.stages import HELD_OUT_FIRST

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, required=True, help="training time per model (CPU)")
    ap.add_argument("--n-train", type=int, default=64, help="demo training subjects (0..N-1)")
    ap.add_argument("--n-test", type=int, default=16, help="held-out test masks (subjects 1000+)")
    ap.add_argument("--ddim-steps", type=int, default=30)
    ap.add_argument("--probe-steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/synthkit_table1"))
    ap.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    a = ap.parse_args()
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(a.threads)
    if a.work.exists():
        shutil.rmtree(a.work)
    a.work.mkdir(parents=True)
    cohort, test = a.work / "train_cohort", a.work / "test"
    _run("cohort", "demo", str(cohort), "--n", str(a.n_train), "--size", "32", "--seed", "0", "--quiet")
    _run("cohort", "demo", str(test), "--n", str(a.n_test), "--size", "32", "--seed", "0",
         "--first", str(HELD_OUT_FIRST), "--quiet")
    runs = [_train(m, cohort, a.work, a) for m in a.models]
    sets = []
    for r in runs:
        out = a.work / LABEL[r["model"]]
        extra = ["--sampler", "ddim", "--steps", str(a.ddim_steps)] if r["model"] == "ddpm" else []
        _run("sample", str(test), "--model", str(r["run"]), "--out", str(out), "--seed", str(a.seed), "--quiet", *extra)
        sets.append(out)
    from synthkit.metrics.baselines import blurred, noise_in_mask

    sets += [blurred(test, a.work / "baseline blurred real"), noise_in_mask(test, a.work / "baseline noise in mask")]
    report = a.work / "metrics.json"
    _run("evaluate", str(test), *map(str, sets), "--features", "deepbet", "--json", str(report), "--seed",
         str(a.seed), "--no-cache", "--quiet")
    _write(json.loads(report.read_text()), runs, a)


def _write(res: dict, runs: list[dict], a) -> None:
    from _common import environment, markdown_table, write_results

    def v(d: dict | None, key: str | None = None):
        d = (d or {}).get(key) if key else d
        return None if not d else d.get("value")

    rows = []
    for s in res["sets"]:
        p = s.get("prdc")
        rows.append({"set": s["name"], "fid": v(s["fid"]), "mmd": v(s["mmd"]), "precision": v(p, "precision"),
                     "recall": v(p, "recall"), "density": v(p, "density"), "coverage": v(p, "coverage"),
                     "diversity": v(s["diversity"]), "mse": v(s["mse"]), "ms_ssim": v(s["ms_ssim"])})
    fmt = lambda x, d=3: "-" if x is None else f"{x:.{d}f}"
    by = {LABEL[r["model"]]: r for r in runs}
    body = [[r["set"], fmt(r["fid"]), fmt(r["mmd"]), fmt(r["precision"], 2), fmt(r["recall"], 2),
             fmt(r["density"], 2), fmt(r["coverage"], 2), fmt(r["diversity"]), fmt(r["mse"], 4), fmt(r["ms_ssim"]),
             (f"{by[r['set']]['steps']} / {by[r['set']]['train_s_logged'] / 60:.1f}" if r["set"] in by else "-")]
            for r in rows]
    real = res["real"]
    body.append([f"real (n={real['n']})", f"floor {fmt(v(real['fid_floor']))}", "-", "-", "-", "-", "-",
                 fmt(v(real["diversity"])), "-", "-", "-"])
    table = markdown_table(["set", "FID↓", "MMD↓", "precision↑", "recall↑", "density", "coverage↑",
                            "MS-SSIM diversity", "MSE (paired)↓", "MS-SSIM (paired)↑", "steps / train min"], body)
    ext = res["settings"]["extractor"]
    title = (f"Table I at an equal budget of {a.minutes:g} training minutes per model ({a.threads} CPU threads, "
             f"fp32), {a.n_train} training subjects, {a.n_test} held-out masks; features: {ext['name']} "
             f"(weights SHA-256 {ext['weights_sha256'][:16]}...)")
    _plot(rows, HERE / "results" / "table1.png")
    doc = {"title": title, "environment": environment(a.threads), "args": {k: str(x) for k, x in vars(a).items()},
           "training": [{k: (str(x) if isinstance(x, Path) else x) for k, x in r.items()} for r in runs],
           "rows": rows, "evaluation": res}
    print(f"{title}\n\n{table}")
    print(write_results("table1", doc, f"{title}\n\n{table}\n\n![Table I metrics](table1.png)"))


if __name__ == "__main__":
    main()
