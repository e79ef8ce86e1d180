"""Does `synthkit evaluate` see what a reader sees? The shipped models against the four controls
and the real set itself, on held-out demo masks at 128^3.

    python benchmarks/evaluate_demo.py                 # 16 held-out masks, DDIM-30, 128^3
    python benchmarks/evaluate_demo.py --n 8 --steps 10

Steps: ``synthkit cohort demo`` (subjects 1000+, never seen by either model) at 128^3,
``synthkit sample`` with ``demo-latent`` (latent Med-DDPM, 128^3) and ``demo`` (the 32^3 pixel
model; written back on each mask's 128^3 grid) on their masks, then ``synthkit evaluate
--controls`` (deepbet features, label fidelity, tissue realism, the four controls), the real set
itself included as a row. Writes benchmarks/results/evaluate_demo.{json,md}: per set 3D-FID, the
tumour's contrast (x real) and Dice (x the cross-fitted real ceiling), the tissue distances next
to the split-half reference, and which metric flagged it.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SYNTHKIT = [sys.executable, "-m", "synthkit"]


def _run(*args: str) -> float:
    t0 = time.perf_counter()
    subprocess.run([*SYNTHKIT, *args], check=True)
    return time.perf_counter() - t0


def _fmt(d: dict | None, key: str = "value", digits: int = 2) -> str:
    return "-" if not d or d.get(key) is None else f"{d[key]:.{digits}f}"


def _rows(res: dict) -> list[list[str]]:
    from synthkit.metrics.tables import verdicts

    flags = {v["name"]: v["flagged"] for v in verdicts(res)}
    rows = []
    for r in res["sets"]:
        tum = (r.get("label_fidelity") or {}).get("tumour") or {}
        t = r.get("tissue") or {}
        rows.append([r["name"], _fmt(r.get("fid"), digits=3),
                     f"{_fmt(tum.get('contrast'))} ({_fmt(tum.get('contrast'), 'ratio_to_real')}x)",
                     f"{_fmt(tum.get('dice'))} ({_fmt(tum.get('dice'), 'ratio_to_ceiling')}x)",
                     _fmt(t.get("spectrum")), _fmt(t.get("intensity_w1"), digits=3), _fmt(t.get("cjv"), digits=3),
                     _fmt(t.get("hf_share"), digits=4), ", ".join(flags[r["name"]]) or "none"])
    real = res["real"]
    tum, t = real["label_fidelity"]["tumour"], real["tissue"]
    rows.append(["real-vs-real reference (floor, ceiling, split halves)", _fmt(real.get("fid_floor"), digits=3),
                 _fmt(tum["contrast"]), _fmt(tum["dice"]), _fmt(t["spectrum"]), _fmt(t["intensity_w1"], digits=3),
                 _fmt(t["cjv"], digits=3), _fmt(t["hf_share"], digits=4), ""])
    return rows


def main() -> None:
    from synthkit.demo.stages import HELD_OUT_FIRST

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="held-out demo masks")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=30, help="DDIM steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/synthkit_evaluate_demo"))
    a = ap.parse_args()
    if a.work.exists():
        shutil.rmtree(a.work)
    real = a.work / "real"
    seconds = {"cohort": _run("cohort", "demo", str(real), "--n", str(a.n), "--size", str(a.size), "--seed", "0",
                              "--first", str(HELD_OUT_FIRST), "--quiet")}
    models = {"demo-latent": a.work / "demo-latent (latent, 128^3)", "demo": a.work / "demo (pixel 32^3, resampled)"}
    for model, out in models.items():
        seconds[f"sample {model}"] = _run("sample", str(real), "--model", model, "--out", str(out), "--sampler", "ddim",
                                          "--steps", str(a.steps), "--seed", str(a.seed), "--quiet")
    out = a.work / "evaluate.json"
    seconds["evaluate"] = _run("evaluate", str(real), *map(str, models.values()), str(real), "--controls",
                               "--json", str(out), "--report", str(a.work / "report"), "--seed", str(a.seed),
                               "--no-cache", "--quiet")
    res = json.loads(out.read_text())
    import torch
    from _common import environment, markdown_table, write_results

    from synthkit.metrics.tables import verdict_lines

    head = ["set", "3D-FID", "tumour contrast (x real)", "tumour Dice (x ceiling)", "spectrum dB", "intensity W1",
            "CJV dist", "HF share", "flagged by"]
    table = markdown_table(head, _rows(res))
    title = (f"{a.n} held-out demo masks (subjects {HELD_OUT_FIRST}+) at {a.size}^3, models sampled with DDIM-{a.steps}, "
             "fp32 on the CPU; deepbet features; label segmenter 600 steps per half at 64^3")
    words = "\n".join(f"- {line}" for line in verdict_lines(res))
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    print(f"{title}\n\n{table}\n\n{words}\n\nwall time: {timing}")
    doc = {"what": title, "environment": environment(torch.get_num_threads()), "seconds": seconds, "results": res}
    print(write_results("evaluate_demo", doc, f"{title}\n\n{table}\n\nWhich metric caught what:\n\n{words}\n\n"
                                               f"Wall time: {timing}."))


if __name__ == "__main__":
    main()
