"""Run every synthkit benchmark in turn (``make bench``).

Each script prints its own table and writes JSON (and Markdown) under ``benchmarks/results/``.
``--quick`` runs the small variants (minutes); without it the full variants run (about an hour
on 2 CPU cores, more with the sampler and mask-privacy runs). The Table I and Table II
reproductions are separate (``benchmarks/table1.py --minutes M``, ``benchmarks/table2.py``): they
train models and take hours to be meaningful.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

SCRIPTS: list[tuple[str, list[str], list[str]]] = [
    # (script, quick args, full args)
    ("bench_denoiser.py", ["--quick"], []),
    ("bench_sampling.py", ["--quick"], []),
    ("bench_evaluate.py", ["--quick"], []),
    ("bench_masks.py", ["--sizes", "48", "--repeats", "3"], []),
    ("bench_latent.py", ["--quick"], []),
    ("bench_samplers.py", ["--quick"], []),
    ("mask_privacy.py", ["--quick"], []),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small variants only")
    ap.add_argument("--only", nargs="*", default=None, help="script names to run")
    args = ap.parse_args()
    failed = []
    for script, quick, full in SCRIPTS:
        if args.only and script not in args.only and script.removesuffix(".py") not in args.only:
            continue
        cmd = [sys.executable, str(HERE / script), *(quick if args.quick else full)]
        print(f"\n=== {' '.join(cmd[1:])}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd)
        print(f"=== {script}: exit {rc} after {time.perf_counter() - t0:.0f} s", flush=True)
        if rc:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
