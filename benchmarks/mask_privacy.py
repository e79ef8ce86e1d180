"""Privacy and fidelity of ``synthkit anonymize --perturb-masks none | deform | template``.

    OMP_NUM_THREADS=1 python benchmarks/mask_privacy.py --threads 1      # 16 subjects, DDIM-30, ~27 min
    OMP_NUM_THREADS=1 python benchmarks/mask_privacy.py --quick          # 4 subjects, ~8 min

The shipped demo model (32^3) and 16 of its own TRAINING subjects as the input cohort: the
attacker's worst case, a patient whose scan trained the model asks for a synthetic copy. Its
training cohort is rebuilt from the recipe the model records (``train_cohort.json``: demo
subjects 0-63); held-out demo subjects (1000+) are the real reference for FID/MMD and the
non-members of the membership attack.

For each mode, ``anonymize`` runs with its defaults (privacy gate on, the linkage gate on since
the inputs are training subjects, 3 retries, deepbet features) except the mask mode, DDIM 30 steps
and seed 0. One prepared reference (memorization check on the 64 training subjects,
train-to-train calibrated) is shared by the three runs; the first attempt of every volume is
kept in memory (``on_attempt``), so the numbers before the gate cover all 16 volumes even when
the gate drops them. Per mode:

* privacy: re-identification (linkage) top-1 / top-5 rate vs chance 1/64 and 5/64 with the
  binomial p-value (best attacker statistic), before the gate and on the written volumes;
  median / max identity and voxel similarity to the nearest training subject; how many volumes
  the gate flagged, regenerated, dropped;
* fidelity: FID / MMD with deepbet features against 16 held-out real subjects (first attempts;
  written volumes where 2 or more); paired MSE / MS-SSIM against the real scan of the source
  subject (a fidelity measure only for ``none``, whose mask is the real one; for the others a
  distance to the patient); head-outline Dice of the mask used vs the source's mask.

Membership inference from the loss (the model's denoising error on its 64 training subjects vs
the 16 held-out) is measured once: it is a property of the model, not of the mask mode. Records
the CPU capability and precision (fp32). Writes benchmarks/results/mask_privacy.{json,md}
(``mask_privacy_quick.*`` with ``--quick``).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np
from _common import environment, markdown_table, setup_threads, write_results

MODES = ("none", "deform", "template")
N_TRAIN = 64


def _cohorts(work: Path, n: int, n_real: int) -> tuple[Path, Path, Path]:
    """(training cohort 0-63 from the model's recipe, its first ``n`` subjects, held-out 1000+)."""
    from synthkit.demo.stages import HELD_OUT_FIRST, training_recipe
    from synthkit.io.demo_cohort import write_demo_cohort
    from synthkit.pipeline.loading import resolve_run

    recipe = training_recipe(Path(resolve_run("demo")))
    assert recipe is not None and recipe["n"] == N_TRAIN, recipe
    train, inputs, real = work / "train", work / "inputs", work / "heldout"
    write_demo_cohort(train, n=recipe["n"], size=recipe["size"], seed=recipe["seed"], first=recipe["first"])
    write_demo_cohort(inputs, n=n, size=recipe["size"], seed=recipe["seed"], first=recipe["first"])
    write_demo_cohort(real, n=n_real, size=recipe["size"], seed=recipe["seed"], first=HELD_OUT_FIRST)
    return train, inputs, real


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float(2 * (a & b).sum() / max(a.sum() + b.sum(), 1))


def head_dice_between_subjects(train: Path, inputs: Path) -> dict[str, float | None]:
    """Head-outline Dice of each input subject's mask with every OTHER training subject's: what
    two different people share in this cohort (the reference for the per-mode Dice)."""
    from synthkit.io import discover_cohort, read_mask

    others = {c.case_id: read_mask(c).data[0] for c in discover_cohort(train).cases}
    vals = [_dice(read_mask(c).data[0], m) for c in discover_cohort(inputs).cases
            for cid, m in others.items() if cid != c.case_id]
    return {**_summary(vals), "min": min(vals)}


def _keep_first(folder: Path, first: dict[str, Any]) -> Any:
    """``on_attempt`` hook: the first attempt of every volume, written under its SOURCE case id
    (benchmark only: the shared output never carries it) for paired metrics."""
    from synthkit.io import write_nifti

    def on_attempt(job: Any, vol: Any, mask: Any, rec: dict[str, Any]) -> None:
        if job.key in first:
            return
        cid = job.case.case_id
        write_nifti(folder / "imagesTr" / f"{cid}_0000.nii.gz", vol.data, vol.affine)
        write_nifti(folder / "labelsTr" / f"{cid}.nii.gz", mask.data, mask.affine, is_label=True)
        first[job.key] = {"case": cid, "record": dict(rec), "mask": mask.data[0].copy()}

    return on_attempt


def _summary(values: list[float | None]) -> dict[str, float | None]:
    v = [x for x in values if x is not None]
    return {"median": statistics.median(v) if v else None, "max": max(v) if v else None}


def run_mode(mode: str, a: argparse.Namespace, inputs: Path, ref: Any, work: Path) -> dict[str, Any]:
    import json

    from synthkit.io import discover_cohort, read_mask
    from synthkit.jobs.anonymize import AnonymizeSettings, anonymize

    out, first_dir = work / f"out_{mode}", work / f"first_{mode}"
    for p in (out, first_dir):
        shutil.rmtree(p, ignore_errors=True)
    first: dict[str, Any] = {}
    s = AnonymizeSettings(sampler="ddim", steps=a.steps, seed=a.seed, perturb_masks=None if mode == "none" else mode,
                          max_retries=a.max_retries, check=ref.settings)
    t0 = time.perf_counter()
    res = anonymize(inputs, "demo", out, settings=s, reference=ref, on_attempt=_keep_first(first_dir, first))
    secs = time.perf_counter() - t0
    man = json.loads((out / "manifest.json").read_text())
    cases = man["cases"]
    source_masks = {c.case_id: read_mask(c).data[0] for c in discover_cohort(inputs).cases}
    recs = [f["record"] for f in first.values()]
    written = [c["attempts"][-1] for c in cases if c["status"] == "ok"]
    attacks = man["privacy"]["attacks"]
    row = {
        "mode": mode, "seconds": secs, "n": len(cases), "written": len(res.written), "dropped": len(res.dropped),
        "flagged_first": sum(r["flagged"] for r in recs), "copy_flag_first": sum(r["copy_flag"] for r in recs),
        "reidentified_first": sum(bool(r.get("reidentified")) for r in recs),
        "regenerated": sum(len(c["attempts"]) > 1 for c in cases),
        "attempts": sum(len(c["attempts"]) for c in cases),
        "linkage_before_gate": attacks.get("linkage_before_gate"), "linkage_written": attacks.get("linkage"),
        "identity_first": _summary([r["identity"] for r in recs]),
        "similarity_first": _summary([r["similarity"] for r in recs]),
        "shape_dice_first": _summary([r["shape_dice"] for r in recs]),
        "identity_written": _summary([r["identity"] for r in written]),
        "similarity_written": _summary([r["similarity"] for r in written]),
        "head_dice_to_source": _summary([_dice(f["mask"], source_masks[f["case"]]) for f in first.values()]),
    }
    print(f"{mode}: {row['written']} written, {row['dropped']} dropped, {row['attempts']} attempts, {secs:.0f} s",
          flush=True)
    return row


def fidelity(rows: list[dict[str, Any]], work: Path, inputs: Path, real: Path, seed: int) -> dict[str, Any]:
    """FID / MMD (deepbet) vs held-out; paired MSE / MS-SSIM vs the source's real scan."""
    from synthkit.metrics.evaluate import evaluate, load_set
    from synthkit.metrics.extractors import make_extractor

    ext = make_extractor(features="deepbet")
    held, sources = load_set(real, ext), load_set(inputs, ext)
    for r in rows:
        sets = [load_set(work / f"first_{r['mode']}", ext, name="first")]
        if r["written"] >= 2:
            sets.append(load_set(work / f"out_{r['mode']}", ext, name="written"))
        vs_real = evaluate(held, sets, ext, seed=seed)["sets"]
        paired = evaluate(sources, sets[:1], ext, seed=seed)["sets"][0]
        r["fid_first"], r["mmd_first"] = vs_real[0]["fid"], vs_real[0]["mmd"]
        r["fid_written"] = vs_real[1]["fid"] if len(vs_real) > 1 else None
        r["mmd_written"] = vs_real[1]["mmd"] if len(vs_real) > 1 else None
        r["paired_n"], r["paired_mse"], r["paired_ms_ssim"] = paired["n_pairs"], paired["mse"], paired["ms_ssim"]
    return {"extractor": ext.name, "ident": ext.ident}


def membership(train: Path, real: Path, seed: int) -> dict[str, Any]:
    from synthkit.pipeline import load
    from synthkit.privacy.audit.runner import membership_from_run

    return membership_from_run(load("demo", "cpu"), train, real, seed=seed)


def _v(d: dict[str, Any] | None, fmt: str = ".3f") -> str:
    if not d or d.get("value") is None:
        return "-"
    return f"{d['value']:{fmt}}"


def _link(link: dict[str, Any] | None) -> tuple[str, str]:
    if not link or "best" not in link:
        return "-", "-"
    b = link["best"]
    t5 = max(link["statistics"].values(), key=lambda r: r["top5"]["rate"])["top5"]
    return (f"{b['top1']['hits']}/{b['top1']['n']} = {b['top1']['rate']:.2f} ({b['statistic']}, p={b['top1']['p_value']:.1g})",
            f"{t5['rate']:.2f} (p={t5['p_value']:.1g})")


def tables(doc: dict[str, Any]) -> str:
    rows = doc["modes"]
    priv, fid = [], []
    for r in rows:
        b1, b5 = _link(r["linkage_before_gate"])
        w1, _ = _link(r["linkage_written"])
        priv.append([r["mode"], b1, b5, f"{r['identity_first']['median']:.2f} / {r['identity_first']['max']:.2f}",
                     f"{r['similarity_first']['median']:.2f} / {r['similarity_first']['max']:.2f}",
                     f"{r['copy_flag_first']} / {r['reidentified_first']}", f"{r['regenerated']}",
                     f"{r['dropped']} / {r['n']}", w1])
        ms = r["paired_ms_ssim"] or {}
        fid.append([r["mode"], _v(r["fid_first"]), _v(r["mmd_first"], ".4f"), _v(r["fid_written"]),
                    _v(r["paired_mse"], ".4f"), f"{ms['value']:.3f}" if ms.get("value") is not None else "-",
                    f"{r['head_dice_to_source']['median']:.3f}"])
    n, n_train = rows[0]["n"], doc["n_train"]
    t1 = markdown_table(["mode", f"top-1 before gate (chance {1 / n_train:.3f})",
                         f"top-5 before gate (chance {5 / n_train:.3f})", "identity median / max",
                         "voxel similarity median / max", "copy-flagged / re-identified (first attempts)",
                         "regenerated", "dropped", "top-1 of written"], priv)
    t2 = markdown_table(["mode", "FID (deepbet)", "MMD", "FID written", "paired MSE to source", "paired MS-SSIM",
                         "head Dice to source mask"], fid)
    mem, between = doc["membership"], doc["head_dice_between_subjects"]
    env = doc["environment"]
    return (f"{doc['what']}\n\nPrivacy ({n} volumes per mode, the source of each known; attacker statistic with "
            f"the best top-1 rate):\n\n{t1}\n\nFidelity (first attempts, all {n} volumes; FID/MMD vs "
            f"{doc['n_real']} held-out real subjects, ± see JSON):\n\n{t2}\n\nHead Dice of two different training "
            f"subjects: median {between['median']:.3f}, max {between['max']:.3f}.\n\nMembership inference from the "
            f"denoising loss ({mem['n_members']} training vs {mem['n_nonmembers']} held-out subjects): AUC "
            f"{mem['auc']:.3f} ({mem['confidence']:.0%} CI {mem['ci'][0]:.3f}-{mem['ci'][1]:.3f}, p = "
            f"{mem['p_value']:.2g}).\n\nCPU capability {env['cpu_capability']}, {env['precision']}, "
            f"{env['threads']} thread(s).")


def main() -> None:

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16, help="training subjects anonymized")
    ap.add_argument("--real", type=int, default=16, help="held-out real subjects (FID/MMD, non-members)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-retries", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--quick", action="store_true", help="4 subjects, 8 held-out")
    ap.add_argument("--work", type=Path, default=Path("/tmp/synthkit_mask_privacy"))
    a = ap.parse_args()
    if a.quick:
        a.n, a.real = 4, 8
    setup_threads(a.threads)
    from synthkit.privacy.audit.check import CheckSettings
    from synthkit.privacy.gate import prepare_reference

    a.work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    train, inputs, real = _cohorts(a.work, a.n, a.real)
    ref = prepare_reference(train, CheckSettings(shape=(32,) * 3, seed=a.seed))
    ref.calibration()
    print(f"reference ready ({time.perf_counter() - t0:.0f} s): {ref.calibration()['planted_copies']['verdict']}",
          flush=True)
    rows = [run_mode(m, a, inputs, ref, a.work) for m in a.modes.split(",")]
    feats = fidelity(rows, a.work, inputs, real, a.seed)
    mem = membership(train, real, a.seed)
    between = head_dice_between_subjects(train, inputs)
    env = {**environment(a.threads), "precision": "fp32"}  # environment() names the CPU capability
    doc = {"what": (f"synthkit anonymize on {a.n} of the demo model's own training subjects (demo 0-{a.n - 1}; "
                    f"training cohort demo 0-{N_TRAIN - 1}), DDIM-{a.steps}, seed {a.seed}, default gate "
                    f"(copy rule + linkage gate, {a.max_retries} retries), deepbet features, 32^3"),
           "n_train": ref.n_train, "n_real": a.real, "calibration": ref.calibration(), "features": feats,
           "membership": mem, "head_dice_between_subjects": between, "modes": rows, "environment": env,
           "total_seconds": time.perf_counter() - t0}
    text = tables(doc)
    print(text)
    print(write_results("mask_privacy_quick" if a.quick else "mask_privacy", doc, text))


if __name__ == "__main__":
    main()
