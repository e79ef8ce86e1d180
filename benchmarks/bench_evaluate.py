"""Time and peak memory of `synthkit evaluate`'s pipeline, N real vs N synthetic volumes, every
stage measured (nothing extrapolated), for each feature extractor.

    .venv/bin/python benchmarks/bench_evaluate.py                 # 64^3 and 128^3, 100 vs 100,
                                                                  # deepbet and random MedicalNet
    .venv/bin/python benchmarks/bench_evaluate.py --quick         # 32^3, 12 vs 12: smoke test
    .venv/bin/python benchmarks/bench_evaluate.py --sizes 128 --extractors deepbet --threads 16

Each (size, extractor) runs in its own subprocess, so peak RSS is per configuration. Volumes are
procedural heads (ellipsoid + smooth texture, label 1) with a bright spherical tumour (label 2);
synthetic = real with perturbed texture and a fainter tumour, same case ids and masks (so MSE,
paired MS-SSIM and label fidelity are computed); written once as an uncompressed nnU-Net dataset
to a temporary folder (not timed). Per configuration:

* ``no fidelity``: the pipeline of the paper's Table I only (FID, MMD, PRDC, MS-SSIM, MSE), empty
  caches;
* ``cold``: the full pipeline with empty feature and segmenter caches (read, preprocess, extract in batches of
  ``--batch-size`` channel volumes, FID / MMD / PRDC with ``--n-boot`` bootstrap replicates,
  MS-SSIM diversity with ``--pairs`` pairs per set, paired MSE / MS-SSIM); the time inside the
  extractor's preprocessing and forward passes is reported separately;
  plus label fidelity and tissue realism: per-case contrast and tissue profile at load, the two
  cross-fitted label segmenters trained at ``--seg-grid`` for ``--seg-steps`` steps each, every
  volume segmented (what label fidelity adds = ``cold`` - ``no fidelity``);
* ``warm``: the same run again (feature and segmenter cache hit);
* ``batching``: the forward pass on ``--probe`` volumes at batch 1 vs ``--batch-size``,
  interleaved (what batching buys; torch threads = ``--threads``).

Prints a table and writes benchmarks/results/bench_evaluate.{json,md} (``_quick`` with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


def _write_sets(root: Path, n: int, size: int, seed: int = 0) -> tuple[Path, Path]:
    from scipy.ndimage import gaussian_filter

    from synthkit.io import write_nnunet_dataset_json
    from synthkit.io.nifti import write_nifti

    rng = np.random.default_rng(seed)
    z, y, x = (np.mgrid[:size, :size, :size] - size / 2) / size
    head = (x**2 / 0.16 + y**2 / 0.12 + z**2 / 0.14) < 1
    for i in range(n):
        c = rng.uniform(-0.12, 0.12, 3)
        tumour = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2) < 0.06**2
        mask = np.where(tumour, 2, head.astype(np.int16)).astype(np.int16)
        tex = gaussian_filter(rng.random((size,) * 3).astype(np.float32), 2.0)
        real = np.where(head, 100 + 300 * tex, 0).astype(np.float32) + 150 * tumour
        tex2 = gaussian_filter(rng.random((size,) * 3).astype(np.float32), 2.5)
        syn = np.where(head, 100 + 300 * (0.7 * tex + 0.3 * tex2), 0).astype(np.float32) + 50 * tumour
        for name, vol in (("real", real), ("synth", syn)):
            write_nifti(root / name / "imagesTr" / f"case_{i:03d}_0000.nii", vol, np.eye(4))
            write_nifti(root / name / "labelsTr" / f"case_{i:03d}.nii", mask, np.eye(4), is_label=True)
    for name in ("real", "synth"):
        write_nnunet_dataset_json(root / name, ("T1",), {"background": 0, "head": 1, "tumour": 2}, n, ".nii")
    return root / "real", root / "synth"


def _timed(ext, clock: dict) -> None:
    """Accumulate the wall time spent in ``ext.prepare`` and ``ext.embed`` into ``clock``."""
    for name in ("prepare", "embed"):
        fn = getattr(ext, name)

        def wrapper(*a, _fn=fn, _name=name, **kw):
            t0 = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                clock[_name] += time.perf_counter() - t0

        setattr(ext, name, wrapper)


def _run_pipeline(ev, ext, real_dir: Path, syn_dir: Path, cache: Path, a, fidelity) -> tuple[dict, dict]:
    clock = {"prepare": 0.0, "embed": 0.0}
    _timed(ext, clock)
    t0, c0 = time.perf_counter(), time.process_time()
    real = ev.load_set(real_dir, ext, cache_dir=cache, fidelity=fidelity)
    syn = ev.load_set(syn_dir, ext, real.grid, cache_dir=cache, fidelity=fidelity)
    t1 = time.perf_counter()
    res = ev.evaluate(real, [syn], ext, n_boot=a.n_boot, diversity_pairs=a.pairs, fidelity=fidelity,
                      dataset_json={"labels": {"background": 0, "head": 1, "tumour": 2}}, cache_dir=cache,
                      device=a.device)
    t2, c2 = time.perf_counter(), time.process_time()
    for name in ("prepare", "embed"):  # restore the class methods
        delattr(ext, name)
    return {"load_features_s": t1 - t0, "preprocess_s": clock["prepare"], "forward_s": clock["embed"],
            "metrics_s": t2 - t1, "total_s": t2 - t0, "cpu_s": c2 - c0}, res


def _batching(ext, size: int, a) -> dict:
    """Forward pass of ``--probe`` prepared volumes, batch 1 vs ``--batch-size`` (interleaved)."""
    from _common import time_interleaved

    rng = np.random.default_rng(0)
    vol = rng.random((1, size, size, size)).astype(np.float32) * 100
    prepared = np.stack([ext.prepare(vol, np.eye(4))] * a.probe)

    def with_batch(b: int):
        def run():
            ext.batch_size = b
            ext.embed(prepared)
        return run

    t = time_interleaved({"batch 1": with_batch(1), f"batch {a.batch_size}": with_batch(a.batch_size)},
                         repeats=2, warmup=1)
    ext.batch_size = a.batch_size
    per = {k: v["min_s"] / a.probe for k, v in t.items()}
    return {"per_volume_s": per, "speedup": per["batch 1"] / per[f"batch {a.batch_size}"]}


def run_one(size: int, extractor: str, a) -> dict:
    import torch
    from _common import setup_threads

    from synthkit.metrics import evaluate as ev

    setup_threads(a.threads)
    out: dict = {"size": size, "extractor": extractor, "n_real": a.n, "n_synth": a.n, "threads": a.threads,
                 "batch_size": a.batch_size, "n_boot": a.n_boot, "diversity_pairs": a.pairs, "device": a.device}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        real_dir, syn_dir = _write_sets(tmp, a.n, size)
        from synthkit.metrics.fidelity import FidelityOptions
        from synthkit.segmentation.multiclass import LabelSegConfig

        ext = ev.make_extractor(None, 10, seed=0, device=a.device, features=extractor)
        ext.batch_size = a.batch_size
        out["extractor_name"], out["weights_sha256"] = ext.name, ext.weights
        fid_opts = FidelityOptions(seg=LabelSegConfig(grid=min(a.seg_grid, size), steps=a.seg_steps))
        out["no fidelity"], _ = _run_pipeline(ev, ext, real_dir, syn_dir, tmp / "cache0", a, None)
        for label in ("cold", "warm"):
            out[label], res = _run_pipeline(ev, ext, real_dir, syn_dir, tmp / "cache", a, fid_opts)
        out["batching"] = _batching(ext, size, a)
        row = res["sets"][0]
        out["ms_ssim_settings"] = res["settings"]["ms_ssim"]
        out["fid"] = row["fid"]["value"]
        out["precision"] = (row.get("prdc") or {}).get("precision", {}).get("value")
        out["diversity_real"] = res["real"]["diversity"]["value"]
        tum = res["real"]["label_fidelity"]["tumour"]
        out["fidelity"] = {"seg_grid": min(a.seg_grid, size), "seg_steps": a.seg_steps,
                           "real_tumour_dice_ceiling": tum["dice"]["value"],
                           "synth_tumour_contrast_x_real": row["label_fidelity"]["tumour"]["contrast"].get("ratio_to_real"),
                           "synth_tumour_dice_x_ceiling": row["label_fidelity"]["tumour"]["dice"].get("ratio_to_ceiling")}
        if a.device.startswith("cuda"):
            out["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    out["load_average_1min_at_end"] = os.getloadavg()[0]
    return out


def _table(rows: list[dict]) -> str:
    from _common import markdown_table

    head = ["size", "extractor", "run", "load+features s", "of which preprocess s", "forward s", "metrics s",
            "total s", "CPU s", "peak RSS MB", "batch speedup"]
    body = []
    for r in rows:
        for label in ("no fidelity", "cold", "warm"):
            c = r[label]
            body.append([f"{r['size']}^3", r["extractor"], label, f"{c['load_features_s']:.1f}",
                         f"{c['preprocess_s']:.1f}", f"{c['forward_s']:.1f}", f"{c['metrics_s']:.1f}",
                         f"{c['total_s']:.1f}", f"{c['cpu_s']:.1f}", f"{r['peak_rss_mb']:.0f}",
                         f"{r['batching']['speedup']:.2f}x (b{r['batch_size']})" if label == "cold" else ""])
    return markdown_table(head, body)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--extractors", nargs="+", default=["deepbet", "random"],
                    help="--features values to measure (deepbet, random, medicalnet-resnet10 ...)")
    ap.add_argument("--n", type=int, default=100, help="volumes per set")
    ap.add_argument("--n-boot", type=int, default=100)
    ap.add_argument("--pairs", type=int, default=100, help="MS-SSIM diversity pairs per set")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS") or os.cpu_count() or 1))
    ap.add_argument("--batch-size", type=int, default=4, help="channel volumes per forward pass")
    ap.add_argument("--probe", type=int, default=8, help="volumes in the batching comparison")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seg-grid", type=int, default=64, help="label-fidelity segmenter grid")
    ap.add_argument("--seg-steps", type=int, default=600, help="steps per segmenter half")
    ap.add_argument("--quick", action="store_true", help="32^3, 12 vs 12, 10 pairs, 20 replicates")
    ap.add_argument("--one", nargs=2, metavar=("SIZE", "EXTRACTOR"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.quick:
        a.sizes, a.n, a.pairs, a.n_boot, a.probe, a.seg_steps = [32], 12, 10, 20, 4, 60
    if a.one:
        print(json.dumps(run_one(int(a.one[0]), a.one[1], a)))
        return
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "MKL_NUM_THREADS": str(a.threads)}
    passthrough = ["--n", str(a.n), "--n-boot", str(a.n_boot), "--pairs", str(a.pairs), "--threads", str(a.threads),
                   "--batch-size", str(a.batch_size), "--probe", str(a.probe), "--device", a.device,
                   "--seg-grid", str(a.seg_grid), "--seg-steps", str(a.seg_steps)]
    rows = []
    for size in a.sizes:
        for extractor in a.extractors:
            print(f"... {size}^3, {extractor}", flush=True)
            cmd = [sys.executable, __file__, "--one", str(size), extractor, *passthrough]
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
            if proc.returncode != 0:
                sys.exit(f"{size}^3 {extractor} failed:\n{proc.stderr[-3000:]}")
            rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    from _common import environment, write_results

    table = _table(rows)
    title = (f"synthkit evaluate, {a.n} vs {a.n} volumes, {a.device} ({a.threads} threads), fp32, "
             f"n_boot {a.n_boot}, {a.pairs} diversity pairs per set, label segmenters {a.seg_steps} steps per half "
             f"at up to {a.seg_grid}^3; every stage measured")
    print(f"\n{title}\n{table}")
    print("load averages at the end of each configuration: "
          + ", ".join(f"{r['size']}^3 {r['extractor']}: {r['load_average_1min_at_end']:.1f}" for r in rows))
    payload = {"benchmark": "bench_evaluate", "environment": environment(a.threads), "title": title, "rows": rows}
    path = write_results("bench_evaluate_quick" if a.quick else "bench_evaluate", payload, f"{title}\n\n{table}")
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
