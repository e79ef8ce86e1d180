"""Which lever makes latent Med-DDPM honour the mask? An ablation at 64^3 (issue 20, item 6).

Every row is trained with synthkit's own commands on demo subjects at 64^3 (16^3 latents), for
the SAME CPU time (``--budget-s`` CPU-seconds of one thread: the steps are the budget divided by
the row's own CPU seconds per step, measured first; fp32: bf16 autocast gave NaN within 10 steps on 16^3 latents), sampled on 16 held-out masks (subjects 1000-1015, never
trained on) and scored by ``synthkit evaluate`` with label fidelity and tissue metrics:

    reconstruction the autoencoder's own reconstruction of the held-out volumes: each row's ceiling
    baseline       today's demo-latent recipe: head intensity bounds, 8 latent channels, the mask
                   average-pooled to the latent grid, plain L1 loss, 64 subjects, small denoiser
    per_label      intensity bounds per label (autoencoder trained on them)       item 1
    4 channels     per_label and a 4-channel autoencoder                           item 5
    full mask      the one-hot mask space-to-depth onto the latent grid            item 2
    label weight   the tumour weighted x10 in the loss                             item 3
    guidance       10 % of steps without the mask; sampled at guidance 1, 2, 3     item 4
    medium         the medium denoiser (fewer steps in the same time)              item 5
    128 subjects   twice the training subjects                                     item 5
    best           the levers given by --best, together

    python benchmarks/latent_ablation.py --work /tmp/abl [--budget-s 600] [--rows baseline,full_mask]
    python benchmarks/latent_ablation.py --work /tmp/abl --best per_label,full_mask,label_weight

Writes ``benchmarks/results/latent_ablation.{md,json}`` and ``latent_ablation.png`` (one row per
set: the same held-out case, three views, the mask outlined). Runs found in ``--work`` are reused.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import RESULTS, environment, markdown_table, write_results

SYNTHKIT = [sys.executable, "-m", "synthkit"]
SIZE = 64  # --size
PRECISION = "fp32"  # --precision (bf16 autocast gave NaN within 10 steps on 16^3 latents; fine on 32^3)
INIT: list[str] = []  # --init MODEL: every row fine-tunes that run's denoiser
# the autoencoders (each trained once on the 128 training subjects; 64^3 volumes, 32^3 crops, batch 4, bf16)
AUTOENCODERS = {"head8": ("head", 8), "label8": ("per_label", 8), "label4": ("per_label", 4)}
AE_STEPS = 1500
# the demo-latent recipe's denoiser settings, at 64^3
BASE_TRAIN = ["--preset", "small", "--prediction", "v", "--loss", "l1", "--batch-size", "4", "--lr", "4e-4",
              "--lr-final", "4e-5", "--ema-decay", "0.999", "--seed", "0", "--checkpoint-every", "500",
              "--preview-every", "0"]
ROWS: dict[str, dict] = {
    "baseline": {"ae": "head8", "subjects": 64, "flags": []},
    "per_label": {"ae": "label8", "subjects": 64, "flags": []},
    "4_channels": {"ae": "label4", "subjects": 64, "flags": []},
    "full_mask": {"ae": "head8", "subjects": 64, "flags": ["--cond-factor", "4"]},
    "label_weight": {"ae": "head8", "subjects": 64, "flags": ["--label-weight", "1", "--label-weight", "10"]},
    "guidance": {"ae": "head8", "subjects": 64, "flags": ["--cond-drop", "0.1"], "guidance": [1.0, 2.0, 3.0]},
    "medium": {"ae": "head8", "subjects": 64, "flags": ["--preset", "medium"]},
    "128_subjects": {"ae": "head8", "subjects": 128, "flags": []},
}


def _run(cmd: list[str], log: Path | None = None) -> dict:
    """Run a synthkit command on one thread; wall and CPU seconds of that child alone (wait4, so
    commands may run side by side)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    t0 = time.perf_counter()
    with open(log, "w") if log else open(os.devnull, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return {"wall_s": time.perf_counter() - t0, "cpu_s": usage.ru_utime + usage.ru_stime}


def _cohorts(work: Path, needed: set) -> dict[str, Path]:
    out = {"held": work / f"held{SIZE}", 64: work / f"train{SIZE}_64", 128: work / f"train{SIZE}"}
    specs = {"held": ["--n", "16", "--first", "1000"], 64: ["--n", "64"], 128: ["--n", "128"]}
    for key, path in out.items():
        if key in needed and not (path / "dataset.json").is_file():
            _run([*SYNTHKIT, "cohort", "demo", str(path), "--size", str(SIZE), "--seed", "0", *specs[key]])
    return out


def _autoencoder(work: Path, name: str, cohort: Path) -> tuple[Path, dict]:
    bounds, channels = AUTOENCODERS[name]
    out = work / f"ae_{name}"
    cost: dict = {}
    if out.is_symlink() or (out / "model.safetensors").is_file():
        return out, cost
    if not (out / "model.safetensors").is_file():
        cost = _run([*SYNTHKIT, "autoencoder", "train", str(cohort), "--out", str(out), "--shape", *[str(SIZE)] * 3,
                     "--crop", "32", "--batch-size", "4", "--precision", "bf16", "--steps", str(AE_STEPS),
                     "--latent-channels", str(channels), "--intensity-bounds", bounds, "--threads", "1",
                     "--checkpoint-every", "250", "--seed", "0", "--quiet", "--cache-dir", str(work / f"cache_{bounds}")])
    return out, cost


def _cpu_per_step(calib: Path, common: list[str]) -> float:
    """CPU seconds per training step of this row's settings: the CPU-time difference of a 40-step
    and a 10-step run (after a 3-step run that fills the latent cache). CPU time, not wall time,
    so that other processes on the machine do not change a row's budget."""
    record = calib / "cpu_per_step.json"
    if record.is_file():
        return float(json.loads(record.read_text())["cpu_per_step"])
    cpu = {}
    for n in (3, 10, 40):
        cpu[n] = _run([*common, "--out", str(calib / f"s{n}"), "--steps", str(n)])["cpu_s"]
    value = (cpu[40] - cpu[10]) / 30
    calib.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"cpu_per_step": value, "cpu_s": cpu}))
    return value


def _train_row(work: Path, name: str, spec: dict, cohorts: dict, budget_s: float) -> dict:
    ae = work / f"ae_{spec['ae']}"
    bounds = AUTOENCODERS[spec["ae"]][0]
    cohort = cohorts[spec["subjects"]]
    common = [*SYNTHKIT, "train", str(cohort), "--autoencoder", str(ae), *BASE_TRAIN, *spec["flags"],
              "--precision", PRECISION, "--quiet", "--cache-dir", str(work / f"cache_{bounds}"), *INIT]
    sps = _cpu_per_step(work / "calib" / name, common)
    steps = max(100, int(budget_s / sps))
    run = work / "runs" / name
    run.parent.mkdir(parents=True, exist_ok=True)
    record = work / "runs" / f"{name}.json"
    if record.is_file():
        return json.loads(record.read_text())
    resume = ["--resume"] if (run / "config.json").is_file() else []
    cost = _run([*common, "--out", str(run), "--steps", str(steps), *resume], work / "runs" / f"{name}.log")
    info = {"steps": steps, "s_per_step": sps, **cost}
    record.write_text(json.dumps(info))
    return info


def _sample(work: Path, name: str, guidance: float, held: Path) -> tuple[str, Path]:
    label = name if guidance == 1.0 else f"{name}_g{guidance:g}"
    out = work / "samples" / label
    if not (out / "manifest.json").is_file():
        _run([*SYNTHKIT, "sample", str(held), "--model", str(work / "runs" / name), "--out", str(out), "--sampler",
              "ddim", "--steps", "25", "--seed", "0", "--guidance", str(guidance), "--quiet"])
    return label, out


def _reconstruct(work: Path, ae_name: str, held: Path, ae_dir: Path | None = None) -> tuple[str, Path]:
    """The autoencoder's reconstruction of every held-out volume (a mask-reading decoder gets the
    case's own mask), written as a set with its real masks: what a perfect denoiser on that
    autoencoder could reach (each row's ceiling). ``ae_dir``: default ``work/ae_NAME``."""
    import shutil

    import torch

    from synthkit.io import discover_cohort, read_image, read_mask
    from synthkit.io.nifti import write_nifti
    from synthkit.preprocess import preprocess_case, to_original_grid
    from synthkit.preprocess.case import one_hot
    from synthkit.training.autoencoder_eval import load_autoencoder

    label = f"reconstruction_{ae_name}"
    out = work / "samples" / label
    if (out / "dataset.json").is_file():
        return label, out
    torch.set_num_threads(1)
    model, cfg = load_autoencoder(ae_dir or work / f"ae_{ae_name}")
    (out / "imagesTr").mkdir(parents=True, exist_ok=True)
    (out / "labelsTr").mkdir(parents=True, exist_ok=True)
    for case in discover_cohort(held).cases:
        image, mask = read_image(case), read_mask(case)
        pre = preprocess_case(image, mask, cfg.preprocess)
        with torch.no_grad():
            mean, _ = model.encode(pre.image[None])
            cond = one_hot(pre.labels, tuple(cfg.preprocess.mask_labels))[None] if model.needs_mask else None
            x = model.decode(mean, cond)[0].clamp(-1, 1)
        vol = to_original_grid(x, pre.record)
        write_nifti(out / "imagesTr" / f"{case.case_id}_s0_0000.nii.gz", vol.data, vol.affine)
        shutil.copyfile(case.mask, out / "labelsTr" / f"{case.case_id}_s0.nii.gz")
    shutil.copyfile(held / "dataset.json", out / "dataset.json")
    return label, out


def _evaluate(held: Path, sets: list[tuple[str, Path]], res_path: Path, work: Path) -> None:
    _run([*SYNTHKIT, "evaluate", str(held), *[str(p) for _, p in sets], "--json", str(res_path),
          "--report", str(work / "report.html"), "--quiet", "--seg-grid", str(SIZE)], work / "evaluate.log")


def _picture(sets: list[tuple[str, Path]], held: Path, path: Path, case: str = "case_1003") -> None:
    from synthkit.io.nifti import read_nifti
    from synthkit.viz import montage

    mask = read_nifti(held / "labelsTr" / f"{case}.nii.gz", is_label=True).data[0]
    vols, titles = [read_nifti(held / "imagesTr" / f"{case}_0000.nii.gz").data[0]], ["real"]
    for label, folder in sets:
        vols.append(read_nifti(folder / "imagesTr" / f"{case}_s0_0000.nii.gz").data[0])
        titles.append(label)
    montage(vols, [mask] * len(vols), titles, path, focus_label=2)


def _table(res: dict, rows: dict, names: list[str], training: bool = True) -> str:
    """Markdown table of the sets ``names``; ``training``: with the rows' training-cost columns."""
    by = {s["name"]: s for s in res["sets"]}
    real = res["real"]
    head = ["set", "steps (CPU s/step)", "CPU s of training", "tumour contrast (x real)", "tumour Dice (x ceiling)",
            "spectrum dB", "intensity W1", "FID"]
    out = []
    for label in names:
        s = by.get(label)
        if s is None:
            continue
        base = label.split("_g")[0] if label not in rows else label
        info = rows.get(base, {})
        tum = (s.get("label_fidelity") or {}).get("tumour") or {}
        t = s.get("tissue") or {}
        c, d = tum.get("contrast") or {}, tum.get("dice") or {}

        def f(x, k="value", n=2):
            return "-" if not x or x.get(k) is None else f"{x[k]:.{n}f}"

        out.append([label, f"{info.get('steps', '-')} ({info.get('s_per_step', 0):.3f})", f"{info.get('cpu_s', 0):.0f}",
                    f"{f(c)} ({f(c, 'ratio_to_real')}x)", f"{f(d)} ({f(d, 'ratio_to_ceiling')}x)",
                    f(t.get("spectrum")), f(t.get("intensity_w1"), n=3), f(s.get("fid"), n=3)])
    tum, t = real["label_fidelity"]["tumour"], real["tissue"]
    out.append(["real (ceiling / split-half reference)", "", "", f"{tum['contrast']['value']:.2f}",
                f"{tum['dice']['value']:.2f}", f"{t['spectrum']['value']:.2f}", f"{t['intensity_w1']['value']:.3f}",
                f"{real.get('fid_floor', {}).get('value', float('nan')):.3f}" if isinstance(real.get("fid_floor"), dict)
                else str(real.get("fid_floor", "-"))])
    if not training:  # scored sets only: drop the two training-cost columns
        head, out = [head[0], *head[3:]], [[r[0], *r[3:]] for r in out]
    return markdown_table(head, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--budget-s", type=float, default=600.0, help="CPU seconds (one thread) per denoiser run")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--jobs", type=int, default=1, help="denoiser runs side by side (one thread each)")
    ap.add_argument("--best", default="", help="comma-separated levers to combine into the row 'best'")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--no-reconstruction", action="store_true", help="no autoencoder-reconstruction rows")
    ap.add_argument("--lr", type=float, nargs=2, default=None, help="LR and LR_FINAL instead of the recipe's 4e-4, 4e-5")
    ap.add_argument("--precision", default="fp32")
    ap.add_argument("--init", default=None, help="every row starts from this run's denoiser (e.g. demo-latent)")
    ap.add_argument("--ae", action="append", default=[], help="NAME=FOLDER: use this autoencoder as NAME (no training)")
    args = ap.parse_args()
    global SIZE, PRECISION
    SIZE, PRECISION = args.size, args.precision
    if args.init:
        INIT[:] = ["--init", args.init]

    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    for spec in args.ae:
        name, folder = spec.split("=", 1)
        link = work / f"ae_{name}"
        if not link.exists():
            link.symlink_to(Path(folder).resolve())
    work.mkdir(parents=True, exist_ok=True)
    rows = {k: dict(ROWS[k]) for k in args.rows.split(",") if k}
    if args.best:
        levers = [ROWS[k] for k in args.best.split(",")]
        best = {"ae": "head8", "subjects": 64, "flags": [], "guidance": [1.0]}
        for lv in levers:
            best["ae"] = lv["ae"] if lv["ae"] != "head8" else best["ae"]
            best["subjects"] = max(best["subjects"], lv["subjects"])
            best["flags"] += lv["flags"]
            best["guidance"] = sorted(set(best["guidance"]) | set(lv.get("guidance", [1.0])))
        rows["best"] = best
    if args.lr:
        for spec in rows.values():
            spec["flags"] = ["--lr", str(args.lr[0]), "--lr-final", str(args.lr[1]), *spec["flags"]]
    cohorts = _cohorts(work, {"held", *(r["subjects"] for r in rows.values())})
    ae_cost = {}
    for name in sorted({r["ae"] for r in rows.values()}):
        ae_cost[name] = _autoencoder(work, name, cohorts.get(128, cohorts[64]))[1]  # every subject the rows may use
    info = {}
    with ThreadPoolExecutor(args.jobs) as pool:  # each run is one thread; the budget is CPU time
        futures = {name: pool.submit(_train_row, work, name, spec, cohorts, args.budget_s) for name, spec in rows.items()}
        for name, fut in futures.items():
            info[name] = fut.result()
            print(name, info[name], flush=True)
    sets = [] if args.no_reconstruction else [_reconstruct(work, name, cohorts["held"])
                                              for name in sorted({r["ae"] for r in rows.values()})]
    if args.init:  # the starting model itself, not trained further
        out = work / "samples" / "init"
        if not (out / "manifest.json").is_file():
            _run([*SYNTHKIT, "sample", str(cohorts["held"]), "--model", args.init, "--out", str(out), "--sampler",
                  "ddim", "--steps", "25", "--seed", "0", "--quiet"])
        sets.append(("init", out))
    sets += [_sample(work, name, g, cohorts["held"]) for name, spec in rows.items() for g in spec.get("guidance", [1.0])]
    res_path = work / "evaluate.json"
    listed = work / "evaluate_sets.json"
    if not (res_path.is_file() and listed.is_file() and json.loads(listed.read_text()) == [str(p) for _, p in sets]):
        _evaluate(cohorts["held"], sets, res_path, work)
        listed.write_text(json.dumps([str(p) for _, p in sets]))
    res = json.loads(res_path.read_text())
    res = res.get("results", res)
    for s, (label, _) in zip(res["sets"], sets, strict=True):
        s["name"] = label
    tag = "" if SIZE == 64 and not args.init else f"_{SIZE}" + ("_finetune" if args.init else "")
    _picture(sets, cohorts["held"], RESULTS / f"latent_ablation{tag}.png")
    env = environment(1)
    table = _table(res, info, [label for label, _ in sets])
    text = (f"{'Fine-tuning ' + args.init + ': ' if args.init else ''}Latent Med-DDPM ablation at {SIZE}^3 ({SIZE // 4}^3 latents), issue 20 item 6. Each denoiser trained for "
            f"{args.budget_s:.0f} CPU-seconds of one thread (steps = budget / its own CPU s/step, {PRECISION}), "
            f"sampled DDIM-25 on 16 held-out masks (demo subjects 1000-1015), scored by `synthkit evaluate` "
            f"(label fidelity: cross-fitted segmenter on the real held-out set; tissue: split-half reference).\n\n"
            f"{table}\n\nCPU: {env['cpu']}, {env['cpu_capability']}, native bf16 {env['bf16_native']}, 1 thread.\n"
            f"Autoencoders ({AE_STEPS} steps of 32^3 crops, batch 4): {json.dumps(ae_cost)}\n")
    print(text)
    write_results(f"latent_ablation{tag}", {"rows": rows, "train": info, "autoencoders": ae_cost, "evaluate": res,
                                      "budget_s": args.budget_s, "environment": env}, text)


if __name__ == "__main__":
    main()
