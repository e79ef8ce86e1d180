"""The privacy gate against a model that really memorised, and one that did not.

    OMP_NUM_THREADS=1 python benchmarks/privacy_memorizer.py              # 32^3, about 15 min CPU
    OMP_NUM_THREADS=1 python benchmarks/privacy_memorizer.py --quick      # 16^3, about 2 min

Subjects each carry their own texture (``tests/privacy_cohorts.individual``), which their mask
does not determine: a model reproduces it only by memorising the subject. Two tiny Med-DDPM
models are trained with synthkit's own trainer (fp32, ``tiny`` preset, 20 timesteps):

* the **memorizer**: 4 subjects, 600 steps of 2 volumes (300 passes over each). It is checked
  to really reproduce its subjects before the gate is asked anything: every sample's nearest
  training image by voxel correlation is its source, with the correlation and the margin to the
  second nearest reported;
* the **normal model**: 16 other subjects, 200 steps of 2 volumes (25 passes over each).

``synthkit privacy`` (the library call, holdout-calibrated on 8 real subjects never trained on,
features off: the identity, ratio, head-shape and voxel statistics only) then judges 16 samples
of the memorizer (4 per training mask), 16 samples of the normal model made from the masks of 16
people neither model saw, and those 16 real people themselves (the holdout false-positive
rate). Reported: the catch rate (flagged with the source as nearest subject) and both
false-positive rates, each with its Clopper-Pearson 95% interval; and what ``anonymize``
(privacy gate on, masks not perturbed, 1 retry) does with the memorizer on its own subjects.

64^3 was asked for; on this project's shared 2-core CPU one training step of the tiny model at
64^3 takes about 8x its 32^3 time (one 32^3 step ~0.7 s CPU), so the memorizer alone would take
over an hour. 32^3 is the default; the size is a flag. Writes
``benchmarks/results/privacy_memorizer.{json,md}`` (``privacy_memorizer_quick.*`` with --quick).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import environment, markdown_table, setup_threads, write_results

T = 20


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval for k successes of n."""
    from scipy import stats

    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def train_model(cohort: Path, out: Path, size: int, steps: int) -> Path:
    from synthkit.config import (
        DiffusionConfig,
        PreprocessConfig,
        RunConfig,
        TrainConfig,
        model_config,
    )
    from synthkit.training import train

    cfg = RunConfig(model=model_config("tiny"), diffusion=DiffusionConfig(timesteps=T),
                    preprocess=PreprocessConfig(target_shape=(size,) * 3),
                    train=TrainConfig(steps=steps, batch_size=2, lr=4e-3, lr_final=4e-4, ema_decay=0.9,
                                      checkpoint_every=steps, seed=0), preset="tiny")
    return Path(train(cohort, out, cfg, progress=False))


def sample(run: Path, masks: Path, out: Path, per_mask: int) -> dict:
    from synthkit.jobs.sample import sample_masks
    from synthkit.pipeline import load

    return sample_masks(load(run, "cpu"), masks, out, per_mask=per_mask, sampler="ddim", steps=T, seed=1)


def memorization_evidence(man: dict, out: Path, images: dict[str, np.ndarray]) -> dict:
    """Per sample: voxel correlation to its source and to the best other training subject."""
    import nibabel as nib

    rows = []
    for e in man["items"]:
        x = np.asarray(nib.load(str(out / e["images"][0])).dataobj, dtype=np.float32).ravel()
        corr = {cid: float(np.corrcoef(x, v.ravel())[0, 1]) for cid, v in images.items()}
        src = corr.pop(e["case"])
        rows.append({"source": src, "best_other": max(corr.values()), "nearest_is_source": src > max(corr.values())})
    return {"n": len(rows), "nearest_is_source": sum(r["nearest_is_source"] for r in rows),
            "source_corr_min": min(r["source"] for r in rows),
            "margin_min": min(r["source"] - r["best_other"] for r in rows),
            "source_corr_median": float(np.median([r["source"] for r in rows]))}


def judge(train: Path, synth: Path, holdout: Path, size: int) -> tuple[list[dict], dict]:
    from synthkit.privacy.audit.check import CheckSettings
    from synthkit.privacy.audit.runner import audit

    result, _ = audit(train, synth, holdout, settings=CheckSettings(shape=(size,) * 3, use_features=False))
    return result.volumes, result.calibration


def rate(k: int, n: int) -> dict:
    lo, hi = clopper_pearson(k, n)
    return {"k": k, "n": n, "rate": k / n, "ci95": [lo, hi]}


def main() -> None:
    import privacy_cohorts as pc

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--quick", action="store_true", help="16^3 (the test's size)")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    size = 16 if a.quick else a.size
    setup_threads(a.threads)
    env = {**environment(a.threads), "precision": "fp32"}
    work = Path(tempfile.mkdtemp(prefix="privacy_memorizer_"))
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        cohorts = {"few": pc.individual(range(4), size), "many": pc.individual(range(100, 116), size),
                   "holdout": pc.individual(range(200, 208), size),
                   "fresh": pc.individual(range(300, 316), size, prefix="fresh_")}
        for name, items in cohorts.items():
            pc.write_cohort(work / name, items)
        mem = train_model(work / "few", work / "mem", size, 600)
        man = sample(mem, work / "few", work / "mem_out", per_mask=4)
        evidence = memorization_evidence(man, work / "mem_out", {cid: img[0] for cid, img, _, _ in cohorts["few"]})
        vols, calib = judge(work / "few", work / "mem_out", work / "holdout", size)
        caught = sum(v["flagged"] and v["id"].rsplit("_s", 1)[0] in (v["nearest"], v["image_nearest"]) for v in vols)
        flagged_mem = sum(v["flagged"] for v in vols)

        from synthkit.jobs.anonymize import AnonymizeSettings, anonymize
        from synthkit.privacy.audit.check import CheckSettings

        st = AnonymizeSettings(sampler="ddim", steps=T, seed=0, max_retries=1, perturb_masks=None,
                               check=CheckSettings(shape=(size,) * 3, use_features=False))
        res = anonymize(work / "few", mem, work / "anon", settings=st, train_cohort=work / "few",
                        holdout=work / "holdout")
        cases = json.loads((work / "anon" / "manifest.json").read_text())["cases"]
        regenerated = sum(len(c["attempts"]) > 1 for c in cases)

        other = train_model(work / "many", work / "other", size, 200)
        sample(other, work / "fresh", work / "other_out", per_mask=1)
        vols_o, _ = judge(work / "many", work / "other_out", work / "holdout", size)
        vols_r, _ = judge(work / "many", work / "fresh", work / "holdout", size)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    payload = {
        "size": size, "timesteps": T, "environment": env,
        "wall_s": round(time.perf_counter() - t0, 1), "cpu_s": round(time.process_time() - c0, 1),
        "memorization_evidence": evidence,
        "catch": rate(caught, len(vols)), "flagged_memorizer": flagged_mem,
        "fpr_normal_model": rate(sum(v["flagged"] for v in vols_o), len(vols_o)),
        "fpr_real_unseen": rate(sum(v["flagged"] for v in vols_r), len(vols_r)),
        "anonymize": {"volumes": len(cases), "first_attempt_flagged": sum(c["attempts"][0]["flagged"] for c in cases),
                      "regenerated": regenerated, "dropped": len(res.dropped), "written": len(res.written)},
        "calibration": {k: calib[k] for k in ("reference", "n_reference", "alpha", "family", "n_synthetic",
                                              "alpha_per_test", "promise")},
    }
    fmt = lambda r: f"{r['k']}/{r['n']} = {r['rate']:.2f} [{r['ci95'][0]:.2f}, {r['ci95'][1]:.2f}]"
    table = markdown_table(["set", "volumes flagged (Clopper-Pearson 95%)"], [
        ["memorizer samples (4 subjects, own masks): caught with source", fmt(payload["catch"])],
        ["normal model (16 subjects) on 16 unseen masks: false positives", fmt(payload["fpr_normal_model"])],
        ["16 real unseen subjects: holdout false-positive rate", fmt(payload["fpr_real_unseen"])],
    ])
    an = payload["anonymize"]
    md = (f"# Privacy gate on a real memorizer ({size}^3)\n\n"
          f"`benchmarks/privacy_memorizer.py{' --quick' if a.quick else ''}`; tiny Med-DDPM, {T} timesteps, DDIM-{T}; "
          f"fp32, {a.threads} thread(s), CPU {env['cpu']} (capability {env['cpu_capability']}); "
          f"{payload['cpu_s']:.0f} s CPU, {payload['wall_s']:.0f} s wall on the shared machine.\n\n"
          f"Memorisation, checked first: {evidence['nearest_is_source']}/{evidence['n']} memorizer samples have "
          f"their source as nearest training image by voxel correlation (median {evidence['source_corr_median']:.3f}, "
          f"min {evidence['source_corr_min']:.3f}; margin to the next subject at least {evidence['margin_min']:.3f}).\n\n"
          + table +
          f"\n\nCopy flag: {calib['reference']} on {calib['n_reference']} subjects, run-wide alpha {calib['alpha']} "
          f"over {calib['n_synthetic']} volumes ({calib['promise']}).\n\n"
          f"`anonymize` with the memorizer on its own {an['volumes']} subjects (masks not perturbed, 1 retry): "
          f"{an['first_attempt_flagged']} first attempts flagged, {an['regenerated']} regenerated, "
          f"{an['dropped']} dropped, {an['written']} written.\n")
    write_results("privacy_memorizer_quick" if a.quick else "privacy_memorizer", payload, md)
    print(md)


if __name__ == "__main__":
    main()
