"""Speed of each mask operation (sample + apply + checks, retries included) per mask.

    python benchmarks/bench_masks.py [--sizes 48 128] [--repeats 5]

Prints a table and writes benchmarks/results/masks.json. Target: < 0.5 s per 48^3 mask.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np

from synthkit.io.atomic import write_json
from synthkit.masks import InMemoryDonors, SampleContext, perturb, resolve_roles

OPS = ["move", "move:elastic=1.5", "transplant", "remove", "place", "deform"]


def phantom(n: int, seed: int) -> np.ndarray:
    """Head ball (label 1) with a lumpy tumour (label 2) of radius ~n/8, (n, n, n) int16."""
    rng = np.random.default_rng(seed)
    g = np.indices((n, n, n), dtype=np.float32) - (n - 1) / 2
    m = np.zeros((n, n, n), np.int16)
    m[(g**2).sum(0) < (0.42 * n) ** 2] = 1
    c = rng.uniform(-0.12 * n, 0.12 * n, 3).astype(np.float32)
    m[((g - c[:, None, None, None]) ** 2).sum(0) < (n / 8) ** 2] = 2
    return m


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[48, 128])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    roles = resolve_roles(None, None, {"background": 0, "head": 1, "tumour": 2})
    rows = []
    for n in args.sizes:
        m = phantom(n, 0)
        ctx = SampleContext(roles, (1.0, 1.0, 1.0), "a",
                            InMemoryDonors({"a": (m, (1.0,) * 3), "b": (phantom(n, 1), (1.0,) * 3)}))
        for op in OPS:
            perturb(m, op, ctx, np.random.default_rng(0))  # warm-up
            times = []
            for r in range(args.repeats):
                t0 = time.perf_counter()
                perturb(m, op, ctx, np.random.default_rng(r + 1))
                times.append(time.perf_counter() - t0)
            rows.append({"size": n, "op": op, "median_s": float(np.median(times)),
                         "max_s": float(np.max(times)), "repeats": args.repeats})
    print(f"{'size':>5} {'op':<18} {'median s':>9} {'max s':>9}")
    for r in rows:
        print(f"{r['size']:>5} {r['op']:<18} {r['median_s']:>9.3f} {r['max_s']:>9.3f}")
    out = Path(__file__).parent / "results" / "masks.json"
    write_json(out, {"benchmark": "masks", "machine": platform.processor() or platform.machine(),
                     "threads": "OMP_NUM_THREADS=" + str(__import__("os").environ.get("OMP_NUM_THREADS")),
                     "target": "< 0.5 s per 48^3 mask", "rows": rows})
    print(f"wrote {out}")
    json.dumps(rows)


if __name__ == "__main__":
    main()
