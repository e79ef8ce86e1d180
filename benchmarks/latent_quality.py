"""Quality of the shipped models on held-out masks at 128^3: latent Med-DDPM (``demo-latent``,
128^3) against the pixel model (``demo``, 32^3, its output resampled onto each 128^3 mask's grid
by the pipeline) and two trivial baselines, with the training CPU time each model cost.

    python benchmarks/latent_quality.py                        # 16 held-out masks, ~10 min on 2 cores
    python benchmarks/latent_quality.py --n 8 --latent RUN     # another latent run folder
    python benchmarks/latent_quality.py --curve RUN_WITH_CHECKPOINTS   # + one row per checkpoint
    python benchmarks/latent_quality.py --latent none --curve RUN --n 8 --out-name latent_curve
    python benchmarks/latent_quality.py --also "earlier run=RUN"  # one more model beside the others

Steps, all through the CLI: ``synthkit cohort demo`` (subjects 1000+, never seen in training, at
128^3), ``synthkit sample`` with each model on those masks (DDIM, background held), the blurred
and noise-in-mask baselines, and ``synthkit evaluate`` (deepbet features, the default) of every
set against the real held-out volumes. ``--curve RUN``: every ``checkpoint/step_*.safetensors`` of
a latent training run is exported (EMA weights) and scored the same way: the quality each
training budget gave. Writes benchmarks/results/latent_quality.{json,md}.
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


def _run(*args: str) -> None:
    subprocess.run([*SYNTHKIT, *args], check=True)


def _budget(run: str) -> str:
    """The training budget a shipped model's card states (its 'time and hardware' row), or ''."""
    from synthkit.errors import SynthkitError
    from synthkit.pipeline import resolve_run

    try:
        card = (resolve_run(run) / "MODEL_CARD.md").read_text()
    except (OSError, SynthkitError):  # no such run or no card: no budget to print
        return ""
    for line in card.splitlines():
        if line.startswith(("| time and hardware |", "| training CPU time |")):
            return line.split("|")[2].strip()
    return ""


def _checkpoint_runs(run: Path, work: Path) -> list[tuple[int, Path]]:
    """One sampling folder per checkpoint of a latent run: config + autoencoder + that step's EMA weights."""
    from synthkit.pipeline.latent import recorded_autoencoder_sha256
    from synthkit.runtime.checkpoint import load_checkpoint, save_weights

    out = []
    for ck in sorted((run / "checkpoint").glob("step_*.safetensors")):
        step = int(ck.stem.split("_")[1])
        dst = work / f"step_{step:06d}"
        shutil.copytree(run / "autoencoder", dst / "autoencoder")
        for name in ("config.json", "intensity.json"):
            shutil.copy2(run / name, dst / name)
        state = load_checkpoint(ck)
        save_weights(dst / "model.safetensors", state.ema,
                     {**state.info, "autoencoder_sha256": recorded_autoencoder_sha256(run / "model.safetensors")})
        out.append((step, dst))
    return out


def main() -> None:
    from synthkit.demo.stages import HELD_OUT_FIRST
    from synthkit.metrics.baselines import blurred, noise_in_mask

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="held-out demo masks")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--latent", default="demo-latent", help="latent run folder or shipped name ('none': only --curve)")
    ap.add_argument("--pixel", default="demo", help="pixel run folder or shipped name")
    ap.add_argument("--latent-steps", type=int, default=25, help="DDIM steps for the latent model")
    ap.add_argument("--pixel-steps", type=int, default=30, help="DDIM steps for the pixel model")
    ap.add_argument("--curve", type=Path, default=None, help="latent training run whose checkpoints to score too")
    ap.add_argument("--also", action="append", default=[], metavar="LABEL=RUN",
                    help="another model to score beside them (repeatable), e.g. an earlier run")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--work", type=Path, default=Path("/tmp/synthkit_latent_quality"))
    ap.add_argument("--out-name", default="latent_quality", help="results/<name>.json and .md")
    a = ap.parse_args()
    if a.work.exists():
        shutil.rmtree(a.work)
    real = a.work / "real"
    _run("cohort", "demo", str(real), "--n", str(a.n), "--size", str(a.size), "--seed", "0", "--first",
         str(HELD_OUT_FIRST), "--quiet")
    models = [(f"pixel Med-DDPM ({a.pixel}, 32^3 resampled to {a.size}^3, DDIM-{a.pixel_steps})", a.pixel,
               a.pixel_steps, "")]
    if a.latent != "none":
        models.insert(0, (f"latent Med-DDPM ({a.latent}, {a.size}^3, DDIM-{a.latent_steps})", a.latent,
                          a.latent_steps, ""))
    for spec in a.also:
        label, sep, run = spec.partition("=")
        if not sep or not label or not run:
            ap.error(f"--also takes LABEL=RUN, got {spec!r}")
        models.append((label, run, a.latent_steps, ""))
    if a.curve is not None:
        models += [(f"latent checkpoint step {s}", str(p), a.latent_steps, str(s))
                   for s, p in _checkpoint_runs(a.curve, a.work / "checkpoints")]
    sets, seconds = [], {}
    for i, (name, run, steps, _) in enumerate(models):
        dst = a.work / f"set{i}"
        t0 = time.perf_counter()
        _run("sample", str(real), "--model", run, "--out", str(dst), "--sampler", "ddim", "--steps", str(steps),
             "--seed", str(a.seed), "--quiet")
        seconds[name] = round((time.perf_counter() - t0) / a.n, 2)
        sets.append((name, dst))
    blur = blurred(real, a.work / "blurred")
    noise = noise_in_mask(real, a.work / "noise", seed=a.seed)
    out = a.work / "metrics.json"
    _run("evaluate", str(real), *(str(p) for _, p in sets), str(blur), str(noise), "--json", str(out),
         "--seed", str(a.seed), "--no-cache", "--quiet")
    res = json.loads(out.read_text())
    from _common import environment, markdown_table, write_results

    names = [n for n, _ in sets] + ["baseline: blurred real", "baseline: noise in mask"]
    rows = []
    for name, r in zip(names, res["sets"], strict=True):
        p = r.get("prdc") or {}
        rows.append([name, f"{r['fid']['value']:.3f} ± {r['fid']['std']:.3f}", f"{r['mmd']['value']:.3f}",
                     *(f"{p[m]['value']:.2f}" if p.get(m) else "-" for m in ("precision", "recall", "coverage")),
                     f"{seconds[name]:.1f}" if name in seconds else "-"])
    floor = res["real"]["fid_floor"]
    rows.append(["real vs real (split halves: the floor)", f"{floor['value']:.3f}", "-", "-", "-", "-", "-"])
    table = markdown_table(["set", "FID (deepbet)", "MMD", "precision", "recall", "coverage", "s / volume"], rows)
    env = environment(int(__import__("torch").get_num_threads()))
    budgets = "\n".join(f"- {run}: {b}" for _, run, _, c in models if not c and (b := _budget(run)))
    title = (f"{a.n} held-out demo masks (subjects {HELD_OUT_FIRST}+) at {a.size}^3, scored against the real "
             f"{a.size}^3 volumes; FID ± bootstrap std. CPU: {env['cpu']}, {env['cpu_capability']}, "
             f"sampling fp32")
    text = f"{title}\n\n{table}\n\nTraining budgets (model cards):\n{budgets or '- (no model card found)'}\n"
    print(text)
    print(write_results(a.out_name, {"what": title, "environment": env, "seconds_per_volume": seconds,
                                           "results": res}, text))


if __name__ == "__main__":
    main()
