"""Write the privacy-reference seed shipped with ``demo-latent`` (its training cohort's features,
alignments and reference statistics, :mod:`synthkit.privacy.audit.reference_seed`) and the
calibration record of the demo's anonymize stage, into
``synthkit/assets/models/demo-latent/privacy_reference/``.

    python benchmarks/demo_privacy_reference.py [--cohort DIR] [--threads 1]

``--cohort``: the model's training cohort as the demo rebuilds it (``synthkit cohort demo DIR
--n 64 --size 128 --seed 0``, the recipe in ``train_cohort.json``); built in a temporary folder
when not given. The seed is computed from scratch (an empty cache folder), with one torch thread
by default, as the demo's check settings give it (comparison grid 32^3, seed 0; 4 volumes).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohort", type=Path, default=None)
    ap.add_argument("--model", default="demo-latent")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--n-synthetic", type=int, default=None, help="run size of the calibration (default: the demo's)")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from synthkit.demo.stages import training_recipe
    from synthkit.demo.state import DemoSizes
    from synthkit.io import discover_cohort
    from synthkit.io.demo_cohort import write_demo_cohort
    from synthkit.pipeline.loading import resolve_run
    from synthkit.privacy.audit.check import CheckSettings
    from synthkit.privacy.audit.reference_cache import cohort_key
    from synthkit.privacy.audit.reference_seed import write_seed
    from synthkit.privacy.gate import SEEDS, prepare_reference

    run_dir = Path(resolve_run(args.model))
    recipe = training_recipe(run_dir)
    if recipe is None:
        raise SystemExit(f"{run_dir} records no demo-cohort recipe")
    config = json.loads((run_dir / "config.json").read_text())
    edge = min(32, *config["preprocess"]["target_shape"])
    check = CheckSettings(shape=(edge,) * 3, seed=0)  # as stages.stage_anonymize (seed 0)
    with tempfile.TemporaryDirectory() as tmp:
        cohort = args.cohort
        if cohort is None:
            cohort = Path(tmp) / "training_cohort"
            write_demo_cohort(cohort, n=recipe["n"], size=recipe["size"], seed=recipe["seed"], first=recipe["first"])
        cache = Path(tmp) / "cache"
        t0, c0 = time.perf_counter(), time.process_time()
        ref = prepare_reference(cohort, check, cache=cache)  # computed in full (empty cache)
        ref.checker.n_synthetic = args.n_synthetic or DemoSizes().n_anonymized
        ref.calibration()  # stored beside the entry by the calibration store
        took = (time.perf_counter() - t0, time.process_time() - c0)
        key = cohort_key([discover_cohort(cohort)], check, ref.checker.extractor.name)
        out = run_dir / SEEDS
        if out.exists():
            shutil.rmtree(out)
        files = write_seed(out, key, ref.checker, ref.digests)
        for f in cache.glob(f"{key}.calibration-*.json"):
            shutil.copyfile(f, out / f.name)
            files.append(out / f.name)
    size = sum(f.stat().st_size for f in files)
    print(f"training side computed in {took[1]:.1f} CPU-s ({took[0]:.1f} s wall, {args.threads} thread(s)); "
          f"shipped {len(files)} files, {size / 1e6:.2f} MB, in {out}")


if __name__ == "__main__":
    main()
