"""Score latent models and autoencoder ceilings side by side on held-out masks at 128^3 (issue 20).

Every set is made through the CLI and scored in ONE ``synthkit evaluate`` call (label fidelity
with the cross-fitted segmenter on the real held-out set, tissue metrics, FID), so the numbers
are comparable row by row:

    --recon NAME=AE        the autoencoder's own reconstruction of each held-out volume (a
                           mask-reading decoder gets the case's mask): the ceiling of any denoiser
                           on that autoencoder
    --sample NAME=MODEL[@G] ``synthkit sample HELD --model MODEL --sampler ddim --steps 25 --seed 0
                           --guidance G`` (a run folder or a shipped name)

    python benchmarks/latent_candidates.py --work /tmp/cand --name demo_latent_v2 \\
        --recon old=synthkit/assets/models/demo-latent/autoencoder --sample shipped=demo-latent

The held-out cohort (demo subjects 1000-1015 at 128^3, never trained on) is made in --work
unless --held names one. Writes ``benchmarks/results/NAME.{md,json,png}``; sets found in --work
are reused (delete a set's folder to redo it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import latent_ablation as abl
from _common import RESULTS, environment, write_results


def _sample(work: Path, held: Path, name: str, spec: str) -> tuple[str, Path, dict]:
    model, _, g = spec.partition("@")
    out = work / "samples" / name
    cost: dict = {}
    if not (out / "manifest.json").is_file():
        cost = abl._run([*abl.SYNTHKIT, "sample", str(held), "--model", model, "--out", str(out), "--sampler", "ddim",
                         "--steps", "25", "--seed", "0", "--guidance", g or "1", "--quiet"], work / f"sample_{name}.log")
    return name, out, {"model": model, "guidance": float(g or 1), **cost}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--name", required=True, help="results file name (benchmarks/results/NAME.*)")
    ap.add_argument("--held", type=Path, default=None, help="held-out cohort (default: made in --work)")
    ap.add_argument("--recon", action="append", default=[], metavar="NAME=AE")
    ap.add_argument("--sample", action="append", default=[], metavar="NAME=MODEL[@G]")
    ap.add_argument("--case", default="case_1003", help="the held-out case drawn in the picture")
    args = ap.parse_args()
    abl.SIZE = 128
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    held = args.held.resolve() if args.held else abl._cohorts(work, {"held"})["held"]
    sets: list[tuple[str, Path]] = []
    info: dict[str, dict] = {}
    for spec in args.recon:
        name, ae = spec.split("=", 1)
        label, folder = abl._reconstruct(work, name, held, Path(ae).resolve())
        sets.append((label, folder))
        info[label] = {"autoencoder": ae}
    for spec in args.sample:
        name, model = spec.split("=", 1)
        label, folder, meta = _sample(work, held, name, model)
        sets.append((label, folder))
        info[label] = meta
    res_path, listed = work / "evaluate.json", work / "evaluate_sets.json"
    if not (res_path.is_file() and listed.is_file() and json.loads(listed.read_text()) == [str(p) for _, p in sets]):
        abl._evaluate(held, sets, res_path, work)
        listed.write_text(json.dumps([str(p) for _, p in sets]))
    res = json.loads(res_path.read_text())
    res = res.get("results", res)
    for s, (label, _) in zip(res["sets"], sets, strict=True):
        s["name"] = label
    abl._picture(sets, held, RESULTS / f"{args.name}.png", case=args.case)
    env = environment(1)
    table = abl._table(res, {}, [label for label, _ in sets], training=False)
    text = (f"Latent candidates at 128^3 on 16 held-out masks (demo subjects 1000-1015), DDIM-25, seed 0, fp32, "
            f"scored together by `synthkit evaluate` (label fidelity: cross-fitted segmenter on the real held-out "
            f"set, 128^3; tissue: split-half reference).\n\n{table}\n\nSets: {json.dumps(info)}\n\n"
            f"CPU: {env['cpu']}, {env['cpu_capability']}, native bf16 {env['bf16_native']}, 1 thread per command.\n")
    print(text)
    write_results(args.name, {"sets": info, "evaluate": res, "environment": env}, text)


if __name__ == "__main__":
    main()
