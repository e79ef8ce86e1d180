"""Time and peak memory of `synthkit evaluate`'s pipeline, 100 real vs 100 synthetic volumes, CPU.

    .venv/bin/python benchmarks/bench_evaluate.py            # 64^3 and 128^3, ~4-5 min on 2 cores
    .venv/bin/python benchmarks/bench_evaluate.py --quick    # 20 vs 20, smoke test

Each size runs in its own subprocess (so peak RSS is per size). Volumes are procedural heads
(sphere + smooth texture), synthetic = real with perturbed texture, same case ids (so MSE and
paired MS-SSIM are computed), written as uncompressed NIfTI to a temp folder (not timed).

* 64^3: the full pipeline, cold (empty feature cache) and warm (cache hit), default settings
  (random MedicalNet resnet10, n_boot 100, 100 diversity pairs per set).
* 128^3: a cold run would spend ~8 min in MedicalNet alone on 2 shared cores, over the budget,
  so the forward pass is timed on ``--probe`` volumes and extrapolated to 200 (marked
  "extrapolated" in the table); reading / equalization / MS-SSIM / FID / MMD / bootstrap run in
  full with a stand-in extractor; diversity pairs are reduced to ``--pairs-128`` (default 20).

Prints a table and writes benchmarks/results/bench_evaluate.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _write_sets(root: Path, n: int, size: int, seed: int = 0) -> tuple[Path, Path]:
    from scipy.ndimage import gaussian_filter

    from synthkit.io.nifti import write_nifti

    rng = np.random.default_rng(seed)
    z, y, x = (np.mgrid[:size, :size, :size] - size / 2) / size
    head = (x**2 / 0.16 + y**2 / 0.12 + z**2 / 0.14) < 1
    for i in range(n):
        tex = gaussian_filter(rng.random((size,) * 3).astype(np.float32), 2.0)
        real = np.where(head, 100 + 300 * tex, 0).astype(np.float32)
        tex2 = gaussian_filter(rng.random((size,) * 3).astype(np.float32), 2.5)
        syn = np.where(head, 100 + 300 * (0.7 * tex + 0.3 * tex2), 0).astype(np.float32)
        write_nifti(root / "real" / f"case_{i:03d}.nii", real, np.eye(4))
        write_nifti(root / "synth" / f"case_{i:03d}.nii", syn, np.eye(4))
    return root / "real", root / "synth"


class _StandIn(torch.nn.Module):
    """Cheap (N, 1, D, H, W) -> (N, 512) map used where the real forward is extrapolated."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.nn.functional.adaptive_avg_pool3d(x, 8).flatten(1)
        return pooled[:, :512]


def run_one(size: int, n: int, probe: int, pairs_128: int) -> dict:
    from synthkit.metrics import evaluate as ev
    from synthkit.metrics.medicalnet import build

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    out: dict = {"size": size, "n_real": n, "n_synth": n}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        real_dir, syn_dir = _write_sets(tmp, n, size)
        cache = tmp / "cache"
        ext = ev.make_extractor(None, 10, seed=0)
        full = size <= 64
        if full:
            for label in ("cold", "warm"):
                t0, c0 = time.perf_counter(), time.process_time()
                real = ev.load_set(real_dir, ext, cache_dir=cache)
                syn = ev.load_set(syn_dir, ext, real.grid, cache_dir=cache)
                t1 = time.perf_counter()
                res = ev.evaluate(real, [syn], ext, n_boot=100, diversity_pairs=100)
                t2, c2 = time.perf_counter(), time.process_time()
                out[label] = {"load_features_s": t1 - t0, "metrics_s": t2 - t1, "total_s": t2 - t0,
                              "cpu_s": c2 - c0}
            out["diversity_pairs"] = 100
            out["features"] = "measured (all 200 volumes)"
        else:
            model = build(10, seed=0)
            x = torch.randn(1, 1, size, size, size)
            with torch.no_grad():
                model(x)
                t0, c0 = time.perf_counter(), time.process_time()
                for _ in range(probe):
                    model(x)
            per_vol = (time.perf_counter() - t0) / probe
            per_vol_cpu = (time.process_time() - c0) / probe
            stand = ev.Extractor(_StandIn(), 10, "standin", None)
            t0, c0 = time.perf_counter(), time.process_time()
            real = ev.load_set(real_dir, stand, cache_dir=None)
            syn = ev.load_set(syn_dir, stand, real.grid, cache_dir=None)
            t1 = time.perf_counter()
            res = ev.evaluate(real, [syn], stand, n_boot=100, diversity_pairs=pairs_128)
            t2, c2 = time.perf_counter(), time.process_time()
            feat_s = per_vol * 2 * n
            out["cold"] = {"load_features_s": (t1 - t0) + feat_s, "metrics_s": t2 - t1,
                           "total_s": (t2 - t0) + feat_s, "cpu_s": (c2 - c0) + per_vol_cpu * 2 * n,
                           "extrapolated": True}
            out["forward_per_volume_s"] = per_vol
            out["diversity_pairs"] = pairs_128
            out["features"] = f"forward timed on {probe} volumes, x{2 * n} extrapolated"
        out["ms_ssim_settings"] = res["settings"]["ms_ssim"]
        out["fid"] = res["sets"][0]["fid"]["value"]
        out["diversity_real"] = res["real"]["diversity"]["value"]
    out["peak_rss_mb"] = _rss_mb()
    out["load_average_1min_at_end"] = os.getloadavg()[0]
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--probe", type=int, default=6)
    ap.add_argument("--pairs-128", type=int, default=20)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.quick:
        a.n, a.sizes, a.probe = 20, [32, 64], 2
    if a.one:
        print(json.dumps(run_one(a.one, a.n, a.probe, a.pairs_128)))
        return
    rows = []
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    for size in a.sizes:
        cmd = [sys.executable, __file__, "--one", str(size), "--n", str(a.n), "--probe", str(a.probe),
               "--pairs-128", str(a.pairs_128)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    print(f"\nsynthkit evaluate, {a.n} vs {a.n} volumes, CPU ({env['OMP_NUM_THREADS']} threads), random MedicalNet resnet10")
    print(f"{'size':>6} {'run':>5} {'load+features s':>16} {'metrics s':>10} {'total s':>9} {'CPU s':>7} "
          f"{'peak RSS MB':>12}  note")
    for r in rows:
        for label in ("cold", "warm"):
            if label in r:
                c = r[label]
                note = "features extrapolated" if c.get("extrapolated") else ""
                note += f"; diversity pairs {r['diversity_pairs']}; MS-SSIM {r['ms_ssim_settings']['scales']} scales k{r['ms_ssim_settings']['kernel_size']}"
                print(f"{r['size']:>5}^3 {label:>5} {c['load_features_s']:>16.1f} {c['metrics_s']:>10.1f} "
                      f"{c['total_s']:>9.1f} {c['cpu_s']:>7.1f} {r['peak_rss_mb']:>12.0f}  {note}")
    result = {"benchmark": "bench_evaluate", "python": platform.python_version(), "torch": torch.__version__,
              "cpu_threads": int(env["OMP_NUM_THREADS"]), "machine": platform.machine(), "rows": rows}
    from synthkit.io.atomic import write_json

    path = write_json(ROOT / "benchmarks" / "results" / ("bench_evaluate_quick.json" if a.quick else "bench_evaluate.json"), result)
    print("wall times are on a shared machine; load average at the end of each size: "
          + ", ".join(f"{r['size']}^3: {r['load_average_1min_at_end']:.1f}" for r in rows))
    print(f"\nwrote {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
