"""GPU check: the researcher-with-a-GPU path, end to end, with its numbers.

On a CUDA machine (``make venv`` with a CUDA build of the pinned torch, then)::

    .venv/bin/python benchmarks/gpu_check.py                    # about 10-15 minutes on one H100

trains the autoencoder, a pixel run and a latent run (recipes ``paper-head-latent`` /
``paper-head-pixel`` at 128^3) for a few dozen steps each, resumes each for as many again, trains
the latent run once more under ``torchrun --nproc_per_node 1`` (NCCL), then samples 128^3
volumes from the pixel and latent runs at fp32 / bf16 and batch 1 / 4 / 8. It writes seconds per
training step, volumes per second and peak GPU memory to ``benchmarks/results/gpu.md`` and
``gpu.json``. A stage that fails (out of memory included) is recorded as failed and the others
still run; the exit code is 1 when any failed.

``--device cpu --tiny`` runs the same stages with tiny networks at 16^3 on the CPU in a minute (a
check of the script itself; results go to ``--results``), and ``--dry-run`` only prints the plan.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))


@dataclasses.dataclass(frozen=True)
class Plan:
    device: str
    tiny: bool
    steps: int  # training steps per stage, then as many again after the resume
    sample_steps: int
    volumes: int
    batches: tuple[int, ...]
    precisions: tuple[str, ...]
    torchrun: bool

    @property
    def size(self) -> int:
        return 16 if self.tiny else 128


def _plan(args: argparse.Namespace) -> Plan:
    tiny = bool(args.tiny)
    return Plan(device=args.device, tiny=tiny, steps=args.steps or (2 if tiny else 30),
                sample_steps=args.sample_steps or (2 if tiny else 10), volumes=args.volumes or (4 if tiny else 8),
                batches=tuple(args.batch_sizes), precisions=tuple(args.precisions), torchrun=not args.no_torchrun)


# ------------------------------------------------------------------ measuring


def _cuda(device: str) -> bool:
    return device.startswith("cuda")


def _reset_peak(device: str) -> None:
    import torch

    if _cuda(device):
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_gib(device: str) -> float | None:
    import torch

    if not _cuda(device):
        return None
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) / 2**30


def _seconds_per_step(run_dir: Path, first: int) -> float | None:
    """Median time between consecutive logged steps after step ``first`` (log.jsonl ``time``)."""
    rows = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines() if ln.strip()]
    times = [r["time"] for r in rows if r.get("step", 0) > first and "time" in r]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    return statistics.median(gaps) if gaps else None


def _last_step(run_dir: Path) -> int:
    rows = [json.loads(ln) for ln in (run_dir / "log.jsonl").read_text().splitlines() if ln.strip()]
    return max(int(r.get("step", 0)) for r in rows) if rows else 0


def _stage(results: list[dict[str, Any]], name: str, fn: Callable[[], dict[str, Any]]) -> None:
    """Run one stage; its record (or its error) goes to ``results``."""
    print(f"gpu_check: {name} ...", flush=True)
    t0 = time.perf_counter()
    try:
        record = {"stage": name, "ok": True, **fn()}
    except Exception as e:  # noqa: BLE001 (recorded, e.g. CUDA out of memory; the other stages still run)
        record = {"stage": name, "ok": False, "error": f"{type(e).__name__}: {e}".splitlines()[0][:300]}
    record["wall_s"] = round(time.perf_counter() - t0, 2)
    print(f"gpu_check: {name}: {'ok' if record['ok'] else 'FAILED ' + record['error']} ({record['wall_s']} s)",
          flush=True)
    results.append(record)


# ------------------------------------------------------------------ stages


def _configs(plan: Plan) -> tuple[Any, Any, Any]:
    """(autoencoder, pixel, latent) configs: the 128^3 recipes, or tiny networks at 16^3."""
    from synthkit.config import PreprocessConfig, autoencoder_config, model_config
    from synthkit.recipes import get_recipe

    ae = get_recipe("paper-head-latent").autoencoder_config()
    pixel = get_recipe("paper-head-pixel").run_config()
    latent = get_recipe("paper-head-latent").run_config()
    if plan.tiny:
        pre = PreprocessConfig(target_shape=(plan.size,) * 3)
        ae = dataclasses.replace(ae, autoencoder=autoencoder_config("tiny"), preprocess=pre, crop=8, preset="tiny")
        pixel = dataclasses.replace(pixel, model=model_config("tiny"), preprocess=pre, preset="tiny")
        latent = dataclasses.replace(latent, model=model_config("tiny"), preprocess=pre, preset="tiny")
        pixel = dataclasses.replace(pixel, diffusion=dataclasses.replace(pixel.diffusion, timesteps=10))
        latent = dataclasses.replace(latent, diffusion=dataclasses.replace(latent.diffusion, timesteps=10))
    return ae, pixel, latent


def _with_steps(cfg: Any, steps: int) -> Any:
    train = dataclasses.replace(cfg.train, steps=steps, checkpoint_every=max(1, steps // 2), preview_every=0)
    return dataclasses.replace(cfg, train=train)


def train_and_resume(kind: str, cohort: Path, out: Path, cfg: Any, plan: Plan, ae_dir: Path | None = None) -> dict:
    """Train ``plan.steps`` steps, then resume to twice that; seconds per step of each half."""
    from synthkit.config import AutoencoderRunConfig, RunConfig
    from synthkit.training.autoencoder import AutoencoderTrainer
    from synthkit.training.autoencoder_latent import LatentTrainer, prepare_latent_run
    from synthkit.training.trainer import Trainer

    record: dict[str, Any] = {"kind": kind}
    for part, (steps, resume) in (("first", (plan.steps, False)), ("resumed", (2 * plan.steps, True))):
        if resume:  # as `--resume` does: the run's own config, with more steps
            cfg = (AutoencoderRunConfig if kind == "autoencoder" else RunConfig).load(out / "config.json")
        c = _with_steps(cfg, steps)
        _reset_peak(plan.device)
        if kind == "autoencoder":
            trainer = AutoencoderTrainer(cohort, out, c, resume=resume, device=plan.device)
        elif kind == "latent":
            c = c if resume else prepare_latent_run(out, c, ae_dir)
            trainer = LatentTrainer(cohort, out, c, resume=resume, device=plan.device)
        else:
            trainer = Trainer(cohort, out, c, resume=resume, device=plan.device)
        try:
            trainer.run()
        finally:
            getattr(trainer, "close", lambda: None)()
        record[f"{part}_s_per_step"] = _seconds_per_step(out, steps - plan.steps)
        record[f"{part}_peak_gib"] = _peak_gib(plan.device)
    record["last_step"] = _last_step(out)
    if record["last_step"] != 2 * plan.steps:
        raise RuntimeError(f"the resumed run ended at step {record['last_step']}, not {2 * plan.steps}")
    record["batch_size"] = cfg.train.batch_size
    return record


def torchrun_stage(cohort: Path, out: Path, ae_dir: Path, plan: Plan) -> dict:
    """``torchrun --standalone --nproc_per_node 1 -m synthkit train`` of the latent recipe."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "1",
           "-m", "synthkit", "train", str(cohort), "--out", str(out), "--recipe", "paper-head-latent",
           "--autoencoder", str(ae_dir), "--steps", str(plan.steps), "--checkpoint-every", str(plan.steps),
           "--preview-every", "0", "--device", plan.device, "--quiet"]
    if plan.tiny:
        cmd += ["--preset", "tiny", "--shape", str(plan.size), str(plan.size), str(plan.size), "--timesteps", "10"]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    t0 = time.perf_counter()
    done = subprocess.run(cmd, check=False, capture_output=True, text=True, env=env, timeout=1800)
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["(no output)"]
        raise RuntimeError(f"torchrun exited {done.returncode}: {tail[0]}")
    if _last_step(out) != plan.steps:
        raise RuntimeError(f"torchrun run ended at step {_last_step(out)}, not {plan.steps}")
    return {"backend": "nccl" if _cuda(plan.device) else "gloo", "s_per_step": _seconds_per_step(out, 0),
            "process_s": round(time.perf_counter() - t0, 2)}


def sample_stage(run: Path, masks: Path, out: Path, plan: Plan, precision: str, batch: int) -> dict:
    """``plan.volumes`` volumes at 128^3 (DDIM, ``plan.sample_steps``): volumes per second, peak memory."""
    import shutil

    from synthkit.jobs.sample import sample_masks
    from synthkit.pipeline import load

    gen = load(run, plan.device, precision=precision)
    warm = out.parent / f"{out.name}_warmup"
    sample_masks(gen, masks, warm, per_mask=1, sampler="ddim", steps=plan.sample_steps, batch_size=1)
    shutil.rmtree(warm, ignore_errors=True)
    _reset_peak(plan.device)
    t0 = time.perf_counter()
    per_mask = max(1, plan.volumes // _count(masks))
    manifest = sample_masks(gen, masks, out, per_mask=per_mask, sampler="ddim", steps=plan.sample_steps,
                            batch_size=batch)
    if _cuda(plan.device):
        import torch

        torch.cuda.synchronize(plan.device)
    seconds = time.perf_counter() - t0
    n = len(manifest["items"])
    return {"precision": gen.precision or "fp32", "batch_size": batch, "volumes": n,
            "volumes_per_s": n / seconds, "peak_gib": _peak_gib(plan.device), "steps": plan.sample_steps}


def _count(masks: Path) -> int:
    return len(list((masks / "labelsTr").glob("*.nii.gz")))


# ------------------------------------------------------------------ report


def _fmt(v: Any, digits: int = 3) -> str:
    return "-" if v is None else f"{v:.{digits}g}" if isinstance(v, float) else str(v)


def render(out: dict[str, Any]) -> str:
    env, lines = out["environment"], []
    lines.append(f"GPU check ({env['device_name']}, torch {env['torch']}, CUDA {env['cuda']}); "
                 f"{out['plan']['steps']} training steps then {out['plan']['steps']} more after a resume, "
                 f"sampling with DDIM-{out['plan']['sample_steps']}.")
    lines += ["", "| training | batch | s / step | s / step after resume | peak GPU GiB | status |",
              "|---|--:|--:|--:|--:|---|"]
    for r in out["stages"]:
        if r["stage"].startswith("train"):
            lines.append(f"| {r['stage']} | {_fmt(r.get('batch_size'))} | {_fmt(r.get('first_s_per_step'))} | "
                         f"{_fmt(r.get('resumed_s_per_step'))} | {_fmt(r.get('resumed_peak_gib'))} | "
                         f"{'ok' if r['ok'] else r['error']} |")
        elif r["stage"].startswith("torchrun"):
            lines.append(f"| {r['stage']} ({r.get('backend', '?')}) | | {_fmt(r.get('s_per_step'))} | | | "
                         f"{'ok' if r['ok'] else r['error']} |")
    lines += ["", f"| sampling {out['size']}^3 | precision | batch | volumes / s | peak GPU GiB | status |",
              "|---|---|--:|--:|--:|---|"]
    for r in out["stages"]:
        if r["stage"].startswith("sample"):
            lines.append(f"| {r['stage'].split()[1]} | {r.get('precision', r['stage'].split()[2])} | "
                         f"{_fmt(r.get('batch_size'))} | {_fmt(r.get('volumes_per_s'))} | {_fmt(r.get('peak_gib'))} | "
                         f"{'ok' if r['ok'] else r['error']} |")
    return "\n".join(lines) + "\n"


def environment(device: str) -> dict[str, Any]:
    import torch

    name = torch.cuda.get_device_name(device) if _cuda(device) else "CPU"
    return {"device": device, "device_name": name, "torch": torch.__version__, "cuda": torch.version.cuda}


# ------------------------------------------------------------------ main


def run_check(plan: Plan, work: Path) -> dict[str, Any]:
    from synthkit.io.demo_cohort import write_demo_cohort

    if _cuda(plan.device):
        import torch

        if not torch.cuda.is_available():
            raise SystemExit("gpu_check: no CUDA GPU here; run with --device cpu --tiny to check the script")
    cohort = write_demo_cohort(work / "cohort", n=plan.volumes, size=plan.size, seed=0).root
    ae_cfg, pixel_cfg, latent_cfg = _configs(plan)
    results: list[dict[str, Any]] = []
    _stage(results, "train autoencoder", lambda: train_and_resume("autoencoder", cohort, work / "ae", ae_cfg, plan))
    _stage(results, "train pixel", lambda: train_and_resume("pixel", cohort, work / "pixel", pixel_cfg, plan))
    _stage(results, "train latent",
           lambda: train_and_resume("latent", cohort, work / "latent", latent_cfg, plan, ae_dir=work / "ae"))
    if plan.torchrun:
        _stage(results, "torchrun latent", lambda: torchrun_stage(cohort, work / "ddp", work / "ae", plan))
    for kind in ("pixel", "latent"):
        for precision in plan.precisions:
            for batch in plan.batches:
                name = f"sample {kind} {precision} b{batch}"
                _stage(results, name, lambda k=kind, p=precision, b=batch: sample_stage(
                    work / k, cohort, work / f"s_{k}_{p}_{b}", plan, p, b))
    return {"plan": dataclasses.asdict(plan), "size": plan.size, "environment": environment(plan.device),
            "stages": results}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --tiny)")
    ap.add_argument("--tiny", action="store_true", help="tiny networks at 16^3: a check of the script itself")
    ap.add_argument("--steps", type=int, default=None, help="training steps per stage (default 30; tiny 2)")
    ap.add_argument("--sample-steps", type=int, default=None, help="DDIM steps per volume (default 10; tiny 2)")
    ap.add_argument("--volumes", type=int, default=None, help="volumes per sampling row (default 8; tiny 4)")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4, 8])
    ap.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    ap.add_argument("--no-torchrun", action="store_true", help="skip the torchrun stage")
    ap.add_argument("--results", type=Path, default=HERE / "results", help="folder for gpu.md and gpu.json")
    ap.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    args = ap.parse_args(argv)
    if args.device == "cpu" and not args.tiny and not args.dry_run:
        ap.error("--device cpu needs --tiny (128^3 training on a CPU takes minutes per step)")
    plan = _plan(args)
    if args.dry_run:
        print(json.dumps(dataclasses.asdict(plan), indent=1))
        return 0
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        out = run_check(plan, args.work or Path(tmp))
    stem = "gpu" if not plan.tiny else "gpu_tiny"
    from synthkit.io.atomic import write_json, write_text

    args.results.mkdir(parents=True, exist_ok=True)
    write_json(args.results / f"{stem}.json", out)
    write_text(args.results / f"{stem}.md", render(out))
    print(render(out))
    return 0 if all(r["ok"] for r in out["stages"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
