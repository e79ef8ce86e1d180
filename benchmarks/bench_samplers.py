"""Samplers: steps versus quality for the shipped demo model, and batched throughput.

    python benchmarks/bench_samplers.py                  # 16 held-out masks, all samplers
    python benchmarks/bench_samplers.py --quick          # 4 masks, no DDPM-250, short timings
    python benchmarks/bench_samplers.py --device cuda

1. Quality: one sample per held-out demo mask (subjects 1000+, never seen in training) with
   DDPM-250, DDIM-50, DDIM-25 and DPM-Solver++ 10/15/25, every sampler starting from the same
   x_T per mask (one generator per volume, seed ``--seed + i``), the masks batched ``--batch``
   at a time through ``synthkit.diffusion.sample``. Each set is scored with ``synthkit evaluate``
   against the real held-out cases (paired MSE and MS-SSIM against the case whose mask
   conditioned the sample; 3D-FID and MMD of the evaluate command's default features: compare
   rows with each other), plus seconds per volume.
2. Throughput: volumes per second at batch 1, 4 and 8 (DPM-Solver++, ``--throughput-steps``),
   one network call per step for the whole batch, timed interleaved (minimum of rounds).

Records the CPU capability (``torch.backends.cpu.get_cpu_capability()``), native bf16
(``torch.ops.mkldnn._is_mkldnn_bf16_supported()``) and the precision used. Writes
``benchmarks/results/samplers.{json,md}`` (``samplers_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import (
    environment,
    fmt_s,
    markdown_table,
    setup_threads,
    time_interleaved,
    write_results,
)

from synthkit.demo.stages import HELD_OUT_FIRST
from synthkit.diffusion import sample

SYNTHKIT = [sys.executable, "-m", "synthkit"]
QUALITY = [("ddpm", 250), ("ddim", 50), ("ddim", 25), ("dpmpp", 10), ("dpmpp", 15), ("dpmpp", 25)]
LABELS = {"ddpm": "DDPM", "ddim": "DDIM", "dpmpp": "DPM-Solver++"}


def run(cmd: list[str]) -> None:
    print("$", " ".join(["synthkit", *cmd[len(SYNTHKIT):]] if cmd[: len(SYNTHKIT)] == SYNTHKIT else cmd), flush=True)
    subprocess.run(cmd, check=True)


def load_model(device: str) -> Any:
    """The shipped demo model as a pipeline (model, diffusion, prepare, to_volume)."""
    try:
        from synthkit.pipeline import load
    except ImportError:  # before the pipeline package existed
        from synthkit.pipeline import load
    return load("demo", device=device)


def machine(threads: int, device: str, precision: str) -> dict[str, Any]:
    from synthkit.runtime.precision import resolve_precision

    env = environment(threads)  # includes cpu_capability and mkldnn_bf16_supported
    env.update(device=device, precision_requested=precision, precision=resolve_precision(device, precision))
    if str(device).startswith("cuda"):
        env["gpu"] = torch.cuda.get_device_name(torch.device(device))
    return env


def prepare_masks(pipe: Any, real: Path) -> tuple[list[str], torch.Tensor, torch.Tensor | None, list[Any]]:
    """Held-out cohort -> (case ids, cond (N, K, d, h, w), background (N, 1, d, h, w) or None,
    grid records)."""
    from synthkit.io import discover_cohort
    from synthkit.io.cohort import read_mask

    ids, conds, records, heads = [], [], [], []
    for case in discover_cohort(real).cases:
        cond, record, has_head = pipe.prepare(read_mask(case))
        ids.append(case.case_id)
        conds.append(cond)
        records.append(record)
        heads.append(has_head)
    cond = torch.stack(conds).to(pipe.device)
    bg = None
    if any(heads):
        flags = torch.tensor(heads, device=cond.device).view(-1, 1, 1, 1, 1)
        bg = (cond.sum(dim=1, keepdim=True) == 0) & flags
    return ids, cond, bg, records


def generators(device: str, seeds: list[int]) -> list[torch.Generator]:
    return [torch.Generator(device=device).manual_seed(s) for s in seeds]


def sample_all(pipe: Any, cond: torch.Tensor, bg: torch.Tensor | None, *, sampler: str, steps: int,
               seed: int, batch: int, precision: str) -> tuple[torch.Tensor, float]:
    """All N masks, ``batch`` at a time, one generator per volume; returns ((N, C, d, h, w), seconds)."""
    outs, t0 = [], time.perf_counter()
    for i in range(0, cond.shape[0], batch):
        c = cond[i : i + batch]
        gens = generators(pipe.device, [seed + j for j in range(i, i + c.shape[0])])
        outs.append(sample(pipe.model, pipe.diffusion, c, sampler=sampler, steps=steps, generator=gens,
                           image_channels=pipe.image_channels, background=None if bg is None else bg[i : i + batch],
                           autocast=precision).float().cpu())
    return torch.cat(outs), time.perf_counter() - t0


def write_set(pipe: Any, folder: Path, ids: list[str], x: torch.Tensor, records: list[Any]) -> None:
    from synthkit.io import write_nifti

    folder.mkdir(parents=True)
    for case_id, xi, rec in zip(ids, x, records, strict=True):
        vol = pipe.to_volume(xi, rec)
        write_nifti(folder / f"{case_id}_s0.nii.gz", vol.data, vol.affine)


def quality(args: argparse.Namespace, pipe: Any, work: Path) -> tuple[list[dict[str, Any]], dict[str, Any],
                                                                      torch.Tensor]:
    """Sample every sampler on the held-out masks and score the sets; returns (rows, evaluate
    metadata, cond (N, K, d, h, w))."""
    real = work / "real"
    size = int(pipe.preprocess.target_shape[0])
    run([*SYNTHKIT, "cohort", "demo", str(real), "--n", str(args.n), "--size", str(size), "--seed", "0",
         "--first", str(args.first), "--quiet"])
    ids, cond, bg, records = prepare_masks(pipe, real)
    rows, sets = [], []
    for sampler, steps in QUALITY:
        if args.quick and sampler == "ddpm":
            continue
        x, secs = sample_all(pipe, cond, bg, sampler=sampler, steps=steps, seed=args.seed, batch=args.batch,
                             precision=args.precision)
        folder = work / f"{sampler}{steps}"
        write_set(pipe, folder, ids, x, records)
        sets.append(folder)
        rows.append({"sampler": sampler, "label": f"{LABELS[sampler]}-{steps}", "steps": steps,
                     "s_per_volume": secs / len(ids), "folder": folder.name})
        print(f"{rows[-1]['label']}: {secs / len(ids):.2f} s/volume", flush=True)
    report = work / "metrics.json"
    run([*SYNTHKIT, "evaluate", str(real), *map(str, sets), "--json", str(report), "--seed", str(args.seed),
         "--quiet", "--no-cache"])
    res = json.loads(report.read_text())
    for r, s in zip(rows, res["sets"], strict=True):
        r.update(mse_paired=(s.get("mse") or {}).get("value"), ms_ssim_paired=(s.get("ms_ssim") or {}).get("value"),
                 fid=s["fid"]["value"], fid_std=s["fid"].get("std"), mmd=s["mmd"]["value"],
                 mmd_std=s["mmd"].get("std"))
    meta = {"extractor": res.get("settings", {}).get("extractor"), "warning": res.get("warning"),
            "real_fid_floor": (res.get("real") or {}).get("fid_floor")}
    return rows, meta, cond


def throughput(args: argparse.Namespace, pipe: Any, cond: torch.Tensor) -> list[dict[str, Any]]:
    """Volumes per second at batch 1, 4 and 8 (the held-out masks, repeated when fewer)."""
    fns, batches = {}, (1, 4, 8)
    for b in batches:
        c = cond[torch.arange(b) % cond.shape[0]].contiguous()

        def fn(c: torch.Tensor = c, b: int = b) -> None:
            sample(pipe.model, pipe.diffusion, c, sampler="dpmpp", steps=args.throughput_steps,
                   generator=generators(pipe.device, list(range(b))), image_channels=pipe.image_channels,
                   autocast=args.precision)
            if str(pipe.device).startswith("cuda"):
                torch.cuda.synchronize()

        fns[b] = fn
    timed = time_interleaved(fns, repeats=1 if args.quick else 3, warmup=0 if args.quick else 1)
    rows = []
    for b in batches:
        t = timed[b]
        rows.append({"batch": b, "steps": args.throughput_steps, "min_s": t["min_s"], "median_s": t["median_s"],
                     "volumes_per_s": b / t["min_s"], "s_per_volume": t["min_s"] / b})
    for r in rows:
        r["x_vs_batch1"] = r["volumes_per_s"] / rows[0]["volumes_per_s"]
    return rows


def batch_agreement(args: argparse.Namespace, pipe: Any, cond: torch.Tensor, b: int = 4) -> float:
    """Max |x| difference between a batch of ``b`` (one generator each) and ``b`` batch-1 calls."""
    c = cond[torch.arange(b) % cond.shape[0]].contiguous()
    kw = {"sampler": "dpmpp", "steps": args.throughput_steps, "image_channels": pipe.image_channels,
          "autocast": args.precision}
    batch = sample(pipe.model, pipe.diffusion, c, generator=generators(pipe.device, list(range(b))), **kw)
    singles = [sample(pipe.model, pipe.diffusion, c[i : i + 1], generator=generators(pipe.device, [i]), **kw)
               for i in range(b)]
    return float((batch - torch.cat(singles)).abs().max())


def tables(doc: dict[str, Any]) -> str:
    env = doc["machine"]
    head = (f"Demo model ({doc['size']}^3, v-prediction), {doc['n_masks']} held-out masks "
            f"(subjects {doc['first']}-{doc['first'] + doc['n_masks'] - 1}); {env['device']}, "
            f"{env['threads']} threads, {env['precision']}, CPU capability {env['cpu_capability']}, "
            f"native bf16 {env['mkldnn_bf16_supported']}")
    f = lambda v, spec: "-" if v is None else format(v, spec)
    q = markdown_table(
        ["sampler", "s / volume", "MSE (paired)", "MS-SSIM (paired)", "3D-FID", "MMD"],
        [[r["label"], fmt_s(r["s_per_volume"]), f(r["mse_paired"], ".4f"), f(r["ms_ssim_paired"], ".3f"),
          f(r["fid"], ".4f"), f(r["mmd"], ".4f")] for r in doc["quality"]])
    t = markdown_table(
        ["batch", "volumes / s", "s / volume", "x vs batch 1"],
        [[r["batch"], f"{r['volumes_per_s']:.3f}", fmt_s(r["s_per_volume"]), f"{r['x_vs_batch1']:.2f}"]
         for r in doc["throughput"]])
    ext = doc.get("extractor")
    name = ext.get("name") if isinstance(ext, dict) else ext
    floor = (doc.get("real_fid_floor") or {}).get("value")
    notes = [f"3D-FID / MMD features: {name}." if name else "",
             f"Real-vs-real split-half 3D-FID floor: {floor:.4f}." if floor is not None else "",
             str(doc.get("warning") or ""),
             (f"{doc['note']}; measured here: batch 4 vs 4 batch-1 calls, max |diff| = "
              f"{doc['batch4_vs_batch1_max_abs_diff']:.2e} (network scale [-1, 1]).")]
    return "\n\n".join([f"# Samplers: steps vs quality\n\n{head}", q,
                        f"Throughput, DPM-Solver++-{doc['throughput'][0]['steps']} (one network call per step per batch)",
                        t, *[n for n in notes if n]])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="held-out masks (--quick: 4)")
    ap.add_argument("--first", type=int, default=HELD_OUT_FIRST, help="first held-out demo subject")
    ap.add_argument("--batch", type=int, default=8, help="masks per sample() call in the quality part")
    ap.add_argument("--throughput-steps", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "auto"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="4 masks, no DDPM-250, 3 throughput steps, 1 round")
    ap.add_argument("--work", type=Path, default=Path("/tmp/synthkit_bench_samplers"))
    args = ap.parse_args()
    if args.quick:
        args.n = min(args.n, 4)
        args.throughput_steps = min(args.throughput_steps, 3)
    setup_threads(args.threads)
    if args.work.exists():
        shutil.rmtree(args.work)
    args.work.mkdir(parents=True)
    pipe = load_model(args.device)
    rows, meta, cond = quality(args, pipe, args.work)
    doc = {"what": "samplers: steps vs quality (demo model, held-out masks) and batched throughput",
           "quick": args.quick, "n_masks": args.n, "first": args.first, "seed": args.seed, "batch": args.batch,
           "size": int(pipe.preprocess.target_shape[0]), "prediction": pipe.diffusion.cfg.prediction,
           "timesteps": pipe.diffusion.num_timesteps, "machine": machine(args.threads, args.device, args.precision),
           "quality": rows, **meta, "throughput": throughput(args, pipe, cond),
           "batch4_vs_batch1_max_abs_diff": batch_agreement(args, pipe, cond),
           "note": ("Volumes of a batch use their own generators; they match their batch-1 runs closely, "
                    "not necessarily bit for bit (kernels may round differently at other batch sizes)")}
    table = tables(doc)
    write_results("samplers_quick" if args.quick else "samplers", doc, table)
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
