"""Does the default feature extractor rank generators sensibly? The shipped demo model against the
two trivial baselines and the real set itself, on held-out demo masks, scored with each extractor.

    python benchmarks/evaluate_demo.py                   # 24 held-out masks, DDIM-30, ~3 min on 2 cores
    python benchmarks/evaluate_demo.py --n 8 --steps 10  # quicker

Steps: ``synthkit cohort demo`` (subjects 1000+, never seen by the demo model), ``synthkit sample
demo`` on their masks, ``baselines.blurred`` / ``noise_in_mask``, then ``synthkit evaluate`` with
``--features deepbet`` (the default) and ``--features random``, the real set itself included as a
row (its FID must be ~0). Writes benchmarks/results/evaluate_demo.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SYNTHKIT = [sys.executable, "-m", "synthkit"]


def _run(*args: str) -> None:
    subprocess.run([*SYNTHKIT, *args], check=True)


def main() -> None:
    from synthkit.demo.stages import HELD_OUT_FIRST
    from synthkit.metrics.baselines import blurred, noise_in_mask

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=24, help="held-out demo masks")
    ap.add_argument("--steps", type=int, default=30, help="DDIM steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/synthkit_evaluate_demo"))
    a = ap.parse_args()
    if a.work.exists():
        shutil.rmtree(a.work)
    real, synth = a.work / "real", a.work / "Med-DDPM (demo model)"
    _run("cohort", "demo", str(real), "--n", str(a.n), "--size", "32", "--seed", "0", "--first",
         str(HELD_OUT_FIRST), "--quiet")
    _run("sample", str(real), "--model", "demo", "--out", str(synth), "--sampler", "ddim", "--steps", str(a.steps),
         "--seed", str(a.seed), "--quiet")
    blur = blurred(real, a.work / "baseline blurred real")
    noise = noise_in_mask(real, a.work / "baseline noise in mask", seed=a.seed)
    results = {}
    for features in ("deepbet", "random"):
        out = a.work / f"{features}.json"
        _run("evaluate", str(real), str(synth), str(blur), str(noise), str(real), "--features", features,
             "--json", str(out), "--seed", str(a.seed), "--no-cache", "--quiet")
        results[features] = json.loads(out.read_text())
    from _common import markdown_table, write_results

    rows = []
    for features, res in results.items():
        for r in res["sets"]:
            p = r.get("prdc") or {}
            name = "real (itself)" if r["name"].startswith("real") else r["name"]
            rows.append([features, name, f"{r['fid']['value']:.3f} ± {r['fid']['std']:.3f}", f"{r['mmd']['value']:.3f}",
                         *(f"{p[m]['value']:.2f}" if p.get(m) else "-" for m in ("precision", "recall", "density",
                                                                                "coverage"))])
        floor = res["real"]["fid_floor"]
        rows.append([features, "real-vs-real split halves (floor)", f"{floor['value']:.3f}", "-", "-", "-", "-", "-"])
    table = markdown_table(["features", "set", "FID", "MMD", "precision", "recall", "density", "coverage"], rows)
    title = (f"{a.n} held-out demo masks (subjects {HELD_OUT_FIRST}+), demo model sampled with DDIM-{a.steps}, "
             "32^3, fp32 on the CPU; FID ± bootstrap std")
    print(f"{title}\n\n{table}")
    doc = {"what": title, "extractors": {f: r["settings"]["extractor"] for f, r in results.items()},
           "results": results}
    print(write_results("evaluate_demo", doc, f"{title}\n\n{table}"))


if __name__ == "__main__":
    main()
