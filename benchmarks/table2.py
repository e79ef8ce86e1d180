"""Small-scale reproduction of the Med-DDPM paper's Table II on the demo cohort (CPU).

    python benchmarks/table2.py                       # real vs classic augmentation
    python benchmarks/table2.py --model runs/demo     # + synthetic and real + synthetic rows
    python benchmarks/table2.py --quick               # smoke test: tiny sets, 1 epoch (~1 min)

CPU cost (2 cores): segmentation training is ~0.05 s per case per epoch at 32^3 with the default
8-channel, 3-level U-Net, so the default run (rows of 20 + 200 + 220 cases, 20 epochs) is about
8-10 minutes; ``--model`` adds two rows (200 + 220 cases, about 7 minutes more) plus generation
(``--n-syn`` samples at ``--steps`` DDIM steps each; use ``--n-syn 100`` to stay near 15 minutes).

Paper protocol (Section IV-E): a plain 3D U-Net (BCE, batch 4) trained on each training set,
tested on held-out real cases, scored with Dice / IoU / Accuracy / Recall / Precision
(mean ± std over test cases). Here, at small scale: ``--n-train`` real demo training cases
(seed 0), ``--n-test`` held-out demo test cases (seed 1, independent subjects), synthetic and
classically augmented sets of ``--n-syn`` cases, everything resampled to ``--shape``.

Every step is a ``synthkit`` command, printed before it runs (copy them to rerun by hand):

    synthkit cohort demo WORK/train --n 20 --size 48 --seed 0
    synthkit cohort demo WORK/test  --n 20 --size 48 --seed 1
    synthkit augment WORK/train --baseline classic --n 200 --out WORK/classic --seed 0
    synthkit augment WORK/train --model RUN --n 200 --out WORK/synthetic --sampler ddim --steps 50 --seed 0
    synthkit segbench --train real=WORK/train --train classic=WORK/classic \\
        --train real+classic=WORK/train,WORK/classic [--train synthetic=WORK/synthetic \\
        --train real+synthetic=WORK/train,WORK/synthetic] --test WORK/test \\
        --epochs 20 --batch-size 4 --shape 32 32 32 --channels 8 --levels 3 --json WORK/segbench.json

A model for ``--model`` can come from ``synthkit train WORK/train --out RUN --preset small
--shape 32 32 32 --steps N`` (or pass ``--train-steps N`` here to do exactly that first).

Note on epochs: as in the paper, every row trains for the same number of *epochs*, so larger
training sets also get more optimiser steps; at this scale the "real" row (20 cases, 5 steps
per epoch) is the most undertrained. Writes ``benchmarks/results/table2.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"

# Table II of the paper (toy dataset: 100 real training cases, 100 test cases, 128^3, 100 epochs)
PAPER_ROWS = [
    ("Real images", "0.2805±0.3218", "0.2125±0.2613", "0.2493±0.3125", "0.2493±0.3125", "0.5100±0.4998"),
    ("Syn 1000 Augmented images", "0.4442±0.3422", "0.3509±0.2958", "0.4416±0.3702", "0.4416±0.3702", "0.7700±0.4208"),
    ("Syn 1000 Med-DDPM", "0.3593±0.3334", "0.2758±0.2781", "0.3675±0.3606", "0.3675±0.3606", "0.6600±0.4737"),
]


def run(cmd: list[str], log: list[dict]) -> float:
    """Run ``python -m synthkit ...``; print it as ``synthkit ...``; return wall seconds."""
    shown = "synthkit " + " ".join(shlex.quote(str(c)) for c in cmd)
    print(f"$ {shown}", flush=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "synthkit", *map(str, cmd)], check=False)
    dt = time.perf_counter() - t0
    log.append({"command": shown, "seconds": round(dt, 1)})
    if proc.returncode != 0:
        sys.exit(f"command failed with exit code {proc.returncode}: {shown}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, default=Path("table2_work"), help="Folder for cohorts and datasets.")
    ap.add_argument("--model", type=str, default=None, help="Trained run folder: adds the synthetic rows.")
    ap.add_argument("--train-steps", type=int, default=0, help="Train a 'small' model for this many steps first.")
    ap.add_argument("--n-train", type=int, default=20)
    ap.add_argument("--n-test", type=int, default=20)
    ap.add_argument("--size", type=int, default=48, help="Demo cohort volume edge (voxels).")
    ap.add_argument("--n-syn", type=int, default=200, help="Synthetic / augmented cases per set.")
    ap.add_argument("--shape", type=int, nargs=3, default=[32, 32, 32])
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--channels", type=int, default=8, help="Segmentation U-Net width.")
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--sampler", default="ddim")
    ap.add_argument("--steps", type=int, default=50, help="Sampling steps (ddim).")
    ap.add_argument("--ops", default="move", help="Mask perturbation for the synthetic set.")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="Smoke test: 4 train, 4 test, 8 syn, 1 epoch.")
    a = ap.parse_args()
    if a.quick:
        a.n_train, a.n_test, a.n_syn, a.epochs = 4, 4, 8, 1

    w = a.work
    log: list[dict] = []
    t_start = time.perf_counter()
    for name, n, seed in (("train", a.n_train, 0), ("test", a.n_test, 1)):
        if not (w / name / "dataset.json").is_file():
            run(["cohort", "demo", w / name, "--n", n, "--size", a.size, "--seed", seed, "-q"], log)
    rows = [f"real={w / 'train'}"]
    run(["augment", w / "train", "--baseline", "classic", "--n", a.n_syn, "--out", w / "classic",
         "--seed", a.seed, "--overwrite", "-q"], log)
    rows += [f"classic={w / 'classic'}", f"real+classic={w / 'train'},{w / 'classic'}"]
    model = a.model
    if model is None and a.train_steps > 0:
        model = str(w / "run")
        run(["train", w / "train", "--out", model, "--preset", "small", "--shape", *a.shape,
             "--steps", a.train_steps, "--seed", a.seed], log)
    gen_seconds = None
    if model is not None:
        gen_seconds = run(["augment", w / "train", "--model", model, "--n", a.n_syn, "--out", w / "synthetic",
                           "--ops", a.ops, "--sampler", a.sampler, "--steps", a.steps, "--seed", a.seed,
                           "--device", a.device, "--overwrite", "-q"], log)
        rows += [f"synthetic={w / 'synthetic'}", f"real+synthetic={w / 'train'},{w / 'synthetic'}"]
    bench_json = w / "segbench.json"
    cmd = ["segbench"]
    for r in rows:
        cmd += ["--train", r]
    cmd += ["--test", w / "test", "--epochs", a.epochs, "--batch-size", a.batch_size, "--shape", *a.shape,
            "--channels", a.channels, "--levels", a.levels, "--seed", a.seed, "--device", a.device,
            "--json", bench_json]
    run(cmd, log)
    total = time.perf_counter() - t_start

    from synthkit.io.atomic import write_json, write_text
    from synthkit.segmentation.bench import to_markdown

    report = json.loads(bench_json.read_text())
    name = "table2_quick" if a.quick else "table2"
    result = {
        "benchmark": "table2",
        "settings": vars(a) | {"work": str(a.work), "model": model},
        "machine": platform.processor() or platform.machine(),
        "torch_threads": os.environ.get("OMP_NUM_THREADS", "default"),
        "commands": log,
        "total_seconds": round(total, 1),
        "generation_seconds": gen_seconds,
        "segbench": {"protocol": report["protocol"], "test": report["test"],
                     "rows": [{k: v for k, v in r.items() if k != "per_case"} for r in report["rows"]]},
    }
    write_json(RESULTS / f"{name}.json", result)
    title = (f"# Table II, small scale ({a.n_train} real train / {a.n_test} test demo cases, "
             f"{a.n_syn} per synthetic set, {'x'.join(map(str, a.shape))}, {a.epochs} epochs)")
    md = [title, "",
          to_markdown(report), "", f"Total wall time: {total / 60:.1f} min on {result['machine']}.", "",
          "Paper (128^3, 100 real / 100 test, 100 epochs), for reference:", "",
          "| Training set | Dice | IoU | Accuracy | Recall | Precision |", "|---|---|---|---|---|---|"]
    md += ["| " + " | ".join(r) + " |" for r in PAPER_ROWS]
    md += ["", "Commands:", "", "```"] + [c["command"] for c in log] + ["```", ""]
    write_text(RESULTS / f"{name}.md", "\n".join(md))
    print()
    print(to_markdown(report))
    print(f"total {total / 60:.1f} min; wrote {RESULTS / (name + '.json')} and .md")


if __name__ == "__main__":
    main()
