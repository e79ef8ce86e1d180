"""Fingerprints of what ``synthkit sample`` and ``synthkit augment`` write, to show that a change
leaves their outputs byte-identical.

Builds a small demo cohort (``synthkit cohort demo``, at the default model's 128^3 grid), then
runs, each with a fixed seed and few sampling steps:

* ``synthkit sample`` with the shipped ``demo`` model (32^3 pixel model) and with ``demo-latent``
  (the default, 128^3 latent model);
* ``synthkit augment`` with ``demo`` (perturbed masks, ``--include-real``) and the classic
  baseline (no model);

and writes a JSON with the SHA-256 of every file each command wrote (NIfTI volumes, label maps,
``dataset.json``, manifests). JSON files also get a second hash with the keys in
:data:`VOLATILE_KEYS` removed (a clock reading would differ between runs); the outputs have none
today, and the JSON says which keys were removed where. Run it before and after a change and
compare the two files::

    OMP_NUM_THREADS=1 python benchmarks/identical_outputs.py --out /tmp/before.json
    # ... change the code ...
    OMP_NUM_THREADS=1 python benchmarks/identical_outputs.py --out /tmp/after.json \
        --compare /tmp/before.json

The commands run as subprocesses of this Python (``python -m synthkit``), one thread each.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

#: JSON keys that hold a clock reading or a duration: left out of the ``json_stable`` hash.
VOLATILE_KEYS = frozenset({"elapsed", "elapsed_s", "seconds", "time", "timestamp", "created", "date", "wall_s"})

COHORT_CASES = 3
COHORT_SIZE = 128  # demo-latent's grid (the default model); demo resamples to its 32^3


def _commands(work: Path) -> dict[str, list[str]]:
    cohort = str(work / "cohort")
    common = ["--seed", "7", "--device", "cpu", "--quiet"]
    return {
        "cohort": ["cohort", "demo", cohort, "--n", str(COHORT_CASES), "--size", str(COHORT_SIZE), "--seed", "3",
                   "--quiet"],
        "sample_demo": ["sample", cohort, "--model", "demo", "--out", str(work / "sample_demo"), "--sampler", "ddim",
                        "--steps", "3", "--per-mask", "2", *common],
        "sample_demo_dpmpp": ["sample", cohort, "--model", "demo", "--out", str(work / "sample_demo_dpmpp"),
                             "--sampler", "dpmpp", "--steps", "2", *common],
        "sample_demo_latent": ["sample", cohort, "--model", "demo-latent", "--out", str(work / "sample_demo_latent"),
                               "--sampler", "ddim", "--steps", "2", *common],
        "augment_demo": ["augment", cohort, "--model", "demo", "--per-mask", "1", "--include-real", "--out",
                         str(work / "augment_demo"), "--sampler", "ddim", "--steps", "3", *common],
        "augment_classic": ["augment", cohort, "--baseline", "classic", "--per-mask", "1", "--out",
                            str(work / "augment_classic"), "--seed", "7", "--quiet"],
    }


def _strip(obj: Any, removed: set[str]) -> Any:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if k in VOLATILE_KEYS:
                removed.add(k)
                continue
            out[k] = _strip(v, removed)
        return out
    if isinstance(obj, list):
        return [_strip(v, removed) for v in obj]
    return obj


def fingerprint(folder: Path) -> dict[str, Any]:
    """``{relative path: {"sha256": ..., ["json_stable": ..., "removed": [...]]}}`` for every file."""
    out: dict[str, Any] = {}
    for p in sorted(q for q in folder.rglob("*") if q.is_file()):
        data = p.read_bytes()
        rec: dict[str, Any] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
        if p.suffix == ".json":
            removed: set[str] = set()
            stable = _strip(json.loads(data), removed)
            text = json.dumps(stable, sort_keys=True).replace(str(folder.parent), "WORK")
            rec["json_stable"] = hashlib.sha256(text.encode()).hexdigest()
            if removed:
                rec["removed"] = sorted(removed)
        out[p.relative_to(folder).as_posix()] = rec
    return out


def run_all(work: Path) -> dict[str, Any]:
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "SYNTHKIT_CACHE_DIR": str(work / "cache")}
    result: dict[str, Any] = {"commands": {}, "files": {}}
    for name, args in _commands(work).items():
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "synthkit", *args], check=False, env=env, capture_output=True,
                              text=True)
        if proc.returncode != 0:
            raise SystemExit(f"{name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        seconds = time.perf_counter() - t0
        shown = [a.replace(str(work), "WORK") for a in args]
        result["commands"][name] = {"argv": ["synthkit", *shown], "seconds": round(seconds, 1)}
        print(f"{name:20s} {seconds:7.1f} s", flush=True)
        result["files"][name] = fingerprint(work / args[2] if name == "cohort" else work / name)
    return result


def compare(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Differences, one line each (empty when every file is the same)."""
    lines = []
    for cmd in sorted(set(before["files"]) | set(after["files"])):
        b, a = before["files"].get(cmd, {}), after["files"].get(cmd, {})
        for f in sorted(set(b) | set(a)):
            if f not in a or f not in b:
                lines.append(f"{cmd}/{f}: only {'before' if f in b else 'after'}")
            elif a[f]["sha256"] != b[f]["sha256"]:
                same_stable = "json_stable" in a[f] and a[f]["json_stable"] == b[f].get("json_stable")
                lines.append(f"{cmd}/{f}: differs{' (only in volatile keys)' if same_stable else ''}")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="JSON to write")
    ap.add_argument("--compare", type=Path, help="an earlier JSON to compare with")
    ap.add_argument("--keep", type=Path, help="work folder to keep (default: a temporary one)")
    args = ap.parse_args()
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
        result = run_all(args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="synthkit-identical-") as tmp:
            result = run_all(Path(tmp))
    n = sum(len(v) for v in result["files"].values())
    result["n_files"] = n
    args.out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    print(f"{n} files fingerprinted -> {args.out}")
    if args.compare:
        diff = compare(json.loads(args.compare.read_text()), result)
        print("\n".join(diff) if diff else f"byte-identical: all {n} files the same as in {args.compare}")
        if diff:
            raise SystemExit(1)


if __name__ == "__main__":
    main()
