"""Latent vs pixel Med-DDPM at 128^3 on the CPU: time per volume, peak memory, training-step memory.

    python benchmarks/bench_latent.py --threads 1 --quick   # fp32; pixel training step at 64^3 (~8 min)
    python benchmarks/bench_latent.py --threads 2           # everything, bf16 rows where native
    python benchmarks/bench_latent.py --render benchmarks/results/latent.json   # only rewrite the .md

Every measurement runs in a fresh subprocess (this script with ``--probe``) and reads its peak
resident set size (``ru_maxrss``), side by side in one run:

1. **Sampling one 128^3 volume.** The shipped ``demo-latent`` run (``--model``; an untrained
   ``small``/``small`` run when it is not installed: speed does not depend on training), loaded
   with ``synthkit.load``: ``Pipeline.sample`` of a 128^3 mask with DPM-Solver++ 15 / 20 and DDIM
   25 steps, preprocessing and decoding included (the decode time is also given on its own).
   Against it: ONE ``paper``-preset pixel-space denoiser call at 128^3 (``build_denoiser("paper")``,
   no_grad), the unit a pixel sampler repeats 250 times (DDPM) or 25-50 (DDIM).
2. **One training step, batch 1** (forward, loss, backward, Adam step): the pixel ``paper``
   denoiser at 128^3 (``--quick``: at 64^3 only; the full run measures 128^3 after 64^3 when the
   64^3 step scaled to 128^3 fits in 90% of MemAvailable, about 17 GiB in fp32, and records the
   row as skipped otherwise); the latent denoiser that a 128^3 head becomes
   (32^3 latent, 8 + 2 channels as in ``demo-latent``; ``small`` and ``paper``); and the autoencoder's own step
   (``small``, 64^3 crops, batch 2, its default). fp32, and bf16 autocast where native; with and
   without activation checkpointing (``ModelConfig.gradient_checkpointing``).

Writes benchmarks/results/latent{_quick}.json and .md.
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
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, environment, fmt_s, markdown_table, write_results

LABELS = {"background": 0, "head": 1, "tumour": 2}
GIB = 1024.0


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def head_labels(size: int):
    """(S, S, S) int16: a head ball (1) holding a tumour ball (2)."""
    import torch

    g = torch.stack(torch.meshgrid(*[torch.arange(size)] * 3, indexing="ij")).float()
    head = ((g - (size - 1) / 2) ** 2).sum(0).sqrt() < 0.42 * size
    tumour = (((g - size * 0.6) ** 2).sum(0).sqrt() < size / 8) & head
    return (head.short() + tumour.short()).numpy()


def _fill_zeros(net, seed: int = 0) -> None:
    """Give zero-initialised layers small random weights (an untrained but non-trivial network)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def make_latent_run(root: Path, size: int = 128, cond_factor: int = 1, latent_channels: int = 4) -> Path:
    """A latent run folder with untrained ``small`` autoencoder and ``small`` denoiser weights
    (``cond_factor``: how the mask reaches the latent grid, as ``train --cond-factor``)."""
    from synthkit.config import (
        AutoencoderRunConfig,
        DataConfig,
        DiffusionConfig,
        PreprocessConfig,
        RunConfig,
        autoencoder_config,
        model_config,
    )
    from synthkit.io.hashing import file_sha256
    from synthkit.networks import build_denoiser
    from synthkit.networks.autoencoder import build_autoencoder
    from synthkit.runtime.checkpoint import save_weights

    pre = PreprocessConfig(target_shape=(size,) * 3, mask_labels=(1, 2))
    ae_cfg = AutoencoderRunConfig(autoencoder=autoencoder_config("small", latent_channels=latent_channels),
                                  preprocess=pre, scale_factor=1.0, preset="small")
    cfg = RunConfig(model=model_config("small", image_channels=latent_channels, mask_classes=2, cond_factor=cond_factor),
                    model_type="latent",
                    diffusion=DiffusionConfig(timesteps=250), preprocess=pre, autoencoder=ae_cfg, preset="small",
                    data=DataConfig(channel_names=("T1",), labels=LABELS))
    (root / "autoencoder").mkdir(parents=True)
    ae, den = build_autoencoder(ae_cfg.autoencoder), build_denoiser(cfg.model)
    _fill_zeros(ae, 1)
    _fill_zeros(den, 2)
    save_weights(root / "autoencoder" / "model.safetensors", {k: v.contiguous() for k, v in ae.state_dict().items()})
    ae_cfg.save(root / "autoencoder" / "config.json")
    sha = file_sha256(root / "autoencoder" / "model.safetensors")
    save_weights(root / "model.safetensors", {k: v.contiguous() for k, v in den.state_dict().items()},
                 {"autoencoder_sha256": sha})
    cfg.save(root / "config.json")
    (root / "intensity.json").write_text(json.dumps({"lo": [0.0], "hi": [1.0]}))
    return root


def _sampling_run(model: str, tmp: Path, cond_factor: int = 1) -> tuple[Path, str]:
    """(run folder, row label) for the sampling rows: ``model`` when it is a latent run that loads,
    else an untrained small/small run (speed does not depend on training)."""
    from synthkit.errors import SynthkitError
    from synthkit.pipeline import load, resolve_run

    if model != "untrained":
        try:
            run = resolve_run(model)
            if load(run).kind == "latent":
                return run, Path(model).name
        except SynthkitError as e:
            print(f"  {model}: {e}; timing an untrained small/small run instead", flush=True)
    if cond_factor != 1:
        return (make_latent_run(tmp / "run", cond_factor=cond_factor, latent_channels=8),
                f"small/small, 8 latent channels, --cond-factor {cond_factor} (untrained)")
    return make_latent_run(tmp / "run"), "small/small (untrained)"


# --------------------------------------------------------------------------- probes (subprocess side)


def probe_latent_sample(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import torch

    import synthkit
    from synthkit.io.volume import Volume

    pipe = synthkit.load(spec["run"], precision=spec["precision"])
    mask = Volume(head_labels(spec["size"])[None], np.diag([1.5, 1.5, 1.5, 1.0]))
    lat = spec["size"] // pipe.factor
    with torch.no_grad():  # warm the denoiser's kernels on the latent shape (one call)
        pipe.model(torch.zeros(1, pipe.config.model.in_channels, lat, lat, lat), torch.tensor([10]))
    decode_s: list[float] = []
    real_decode = pipe.decode

    def timed_decode(z):
        t0 = time.perf_counter()
        out = real_decode(z)
        decode_s.append(time.perf_counter() - t0)
        return out

    pipe.decode = timed_decode
    before = _rss_mib()
    t0 = time.perf_counter()
    vol = pipe.sample(mask, seed=0, sampler=spec["sampler"], steps=spec["steps"], guidance=spec.get("guidance", 1.0))
    dt = time.perf_counter() - t0
    assert vol.data.shape == (1, *(spec["size"],) * 3)
    return {"seconds": dt, "decode_s": decode_s[0], "before_mib": before, "peak_mib": _rss_mib()}


def probe_pixel_call(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from synthkit.networks import build_denoiser
    from synthkit.runtime.precision import autocast_context

    net = build_denoiser("paper").eval()
    s = spec["size"]
    x, t = torch.randn(1, 3, s, s, s), torch.tensor([100])
    before = _rss_mib()
    t0 = time.perf_counter()
    with torch.no_grad(), autocast_context("cpu", spec["precision"]):
        net(x, t)
    return {"seconds": time.perf_counter() - t0, "before_mib": before, "peak_mib": _rss_mib()}


def probe_train_step(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    from synthkit.config import DiffusionConfig, autoencoder_config, model_config
    from synthkit.diffusion import GaussianDiffusion
    from synthkit.networks import build_denoiser
    from synthkit.networks.autoencoder import build_autoencoder, kl_divergence
    from synthkit.runtime.precision import autocast_context

    s, b, g = spec["size"], spec["batch"], torch.Generator().manual_seed(0)
    if spec["net"] == "autoencoder":
        net = build_autoencoder(autoencoder_config(spec["preset"])).train()
        x = torch.rand((b, 1, s, s, s), generator=g) * 2 - 1

        def loss_fn():
            recon, mean, logvar = net(x, generator=g)
            return (recon.float() - x).abs().mean() + 1e-6 * kl_divergence(mean, logvar)
    else:
        cfg = model_config(spec["preset"], image_channels=spec["channels"], mask_classes=2,
                           gradient_checkpointing=spec["checkpointing"])
        net = build_denoiser(cfg).train()
        diffusion = GaussianDiffusion(DiffusionConfig(timesteps=250))
        x = torch.randn((b, spec["channels"], s, s, s), generator=g)
        lab = torch.from_numpy(head_labels(s)).long()
        cond = torch.stack([lab == 1, lab == 2]).float()[None].expand(b, -1, -1, -1, -1).contiguous()

        def loss_fn():
            return diffusion.training_loss(net, x, cond, generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)
    before = _rss_mib()
    t0 = time.perf_counter()
    with autocast_context("cpu", spec["precision"]):
        loss = loss_fn()
    loss.backward()
    opt.step()
    return {"seconds": time.perf_counter() - t0, "before_mib": before, "peak_mib": _rss_mib(),
            "params": sum(p.numel() for p in net.parameters())}


PROBES = {"latent_sample": probe_latent_sample, "pixel_call": probe_pixel_call, "train_step": probe_train_step}


def run_probe(spec: dict[str, Any], threads: int, timeout: float) -> dict[str, Any]:
    """``spec`` measured in a fresh process; ``{"error": ...}`` when it fails (e.g. killed for memory)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), "--probe", json.dumps(spec), "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout, env=env, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {**spec, "error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return {**spec, "error": f"exit code {proc.returncode}: {tail[-300:]}"}
    res = {**spec, **json.loads(proc.stdout.strip().splitlines()[-1])}
    print(f"  {json.dumps({k: v for k, v in res.items() if k != 'run'})}", flush=True)
    return res


# --------------------------------------------------------------------------- measuring


def measure_sampling(args, precisions: list[str], run: Path, label: str) -> list[dict]:
    res = []
    for prec in precisions:
        for sampler, steps in (("dpmpp", 15), ("dpmpp", 20), ("ddim", 25)):
            res.append(run_probe({"probe": "latent_sample", "run": str(run), "label": label, "size": 128,
                                  "sampler": sampler, "steps": steps, "precision": prec, "guidance": args.guidance},
                                 args.threads, 1800))
    for prec in precisions:
        res.append(run_probe({"probe": "pixel_call", "size": 128, "precision": prec}, args.threads, 3600))
    return res


def _mem_available_mib() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("inf")


def measure_training(args, precisions: list[str]) -> list[dict]:
    specs = []
    for prec in precisions:
        for ck in (False, True):
            for preset in ("small", "paper"):
                specs.append({"probe": "train_step", "net": "denoiser", "what": f"latent ({preset} denoiser)",
                              "preset": preset, "channels": 8, "size": 32, "head": 128, "batch": 1,
                              "precision": prec, "checkpointing": ck})
        specs.append({"probe": "train_step", "net": "autoencoder", "what": "autoencoder (small, crops)",
                      "preset": "small", "size": 64, "batch": 2, "precision": prec, "checkpointing": False})
    res = [run_probe(s, args.threads, 1800) for s in specs]
    for prec in precisions:
        for ck in (False, True):
            base = {"probe": "train_step", "net": "denoiser", "what": "pixel (paper denoiser)", "preset": "paper",
                    "channels": 1, "batch": 1, "precision": prec, "checkpointing": ck}
            small = run_probe({**base, "size": 64, "head": 64}, args.threads, 3600)
            res.append(small)
            if args.quick or "error" in small:
                continue
            need = gpu_estimate_mib(small, 128) + small["before_mib"]
            if need > 0.9 * _mem_available_mib():
                res.append({**base, "size": 128, "head": 128, "error": f"skipped: needs about {need / GIB:.1f} GiB, "
                            f"{_mem_available_mib() / GIB:.1f} GiB available"})
                continue
            res.append(run_probe({**base, "size": 128, "head": 128}, args.threads, 7200))
    return res


# --------------------------------------------------------------------------- rendering


def gpu_estimate_mib(r: dict, head: int = 128) -> float:
    """What one training step of row ``r`` holds, for a ``head``^3 head: weights, gradients and
    the two Adam moments (16 bytes per parameter) plus the activations (the step's RSS growth
    minus the 12 bytes per parameter of gradients and moments), scaled with the voxel count
    from the measured grid (exact at the measured grid)."""
    fixed = 12 * r["params"] / 2**20
    act = max(r["peak_mib"] - r["before_mib"] - fixed, 0.0)
    return 4 * r["params"] / 2**20 + fixed + act * (head / r["head"]) ** 3


def render_sampling(res: list[dict], threads: int) -> list[str]:
    pixel = {r["precision"]: r.get("seconds") for r in res if r["probe"] == "pixel_call"}
    rows = []
    for r in res:
        name = (f"latent {r.get('label', 'small/small')} " + ("DPM-Solver++" if r.get("sampler") == "dpmpp" else "DDIM")
                + f" {r['steps']}" if r["probe"] == "latent_sample" else "pixel paper: ONE denoiser call")
        if "error" in r:
            rows.append([name, r["precision"], r["error"], "", "", ""])
            continue
        ratio = r["seconds"] / pixel[r["precision"]] if pixel.get(r["precision"]) else float("nan")
        rows.append([name, r["precision"], fmt_s(r["seconds"]), fmt_s(r["decode_s"]) if "decode_s" in r else "",
                     f"{r['peak_mib']:.0f}", f"{ratio:.2f}"])
    table = markdown_table(["what", "precision", "s / 128^3 volume", "of which decode s", "peak RSS MiB",
                            "x one pixel call"], rows)
    title = (f"Sampling one 128^3 volume on the CPU ({threads} thread(s)); each row a fresh process, latent rows "
             "include preprocessing the mask, decoding and the return to the mask's grid")
    return [title, table, ""]


def render_training(res: list[dict]) -> list[str]:
    if not res:  # --sampling-only
        return []
    rows = []
    for r in res:
        grid = f"{r['size']}^3" + (f" x{r['batch']}" if r["batch"] > 1 else "")
        head = [r["what"], grid, r["precision"], "yes" if r["checkpointing"] else "no"]
        if "error" in r:
            rows.append([*head, r["error"], "", "", ""])
            continue
        est = f"{gpu_estimate_mib(r) / GIB:.1f}" if "head" in r else ""
        rows.append([*head, fmt_s(r["seconds"]), f"{r['peak_mib']:.0f}", f"{r['peak_mib'] - r['before_mib']:.0f}",
                     est])
    table = markdown_table(["model", "grid", "precision", "act. checkpointing", "step s", "peak RSS MiB",
                            "step MiB", "GiB for a 128^3 head"], rows)
    title = ("One training step, batch 1 unless noted (forward, loss, backward, Adam). step MiB = peak RSS minus "
             "the RSS before the step; GiB for a 128^3 head = weights, gradients and Adam moments (16 B per "
             "parameter) plus the activations, scaled with the voxel count where the grid measured is smaller "
             "(pixel 64^3: x8); the latent denoiser's 32^3 is a 128^3 head")
    return [title, table, "", gpu_sentence(res), ""]


def _batch_that_fits(r: dict, budget_gib: float = 14.0) -> int:
    """The largest batch whose 128^3-head step stays under ``budget_gib`` (activations grow with the batch)."""
    fixed = 16 * r["params"] / 2**20 / GIB
    act = gpu_estimate_mib(r) / GIB - fixed
    return int((budget_gib - fixed) // act) if act > 0 else 0


def gpu_sentence(res: list[dict]) -> str:
    """What the step memory means for a 16 GB GPU (fp32, the largest measured pixel grid, the latent);
    14 GiB of the 16 are left to the step (a CUDA context and the allocator's cache take the rest)."""
    ok = [r for r in res if "error" not in r and r["precision"] == "fp32"]
    pix = [r for r in ok if r["what"].startswith("pixel")]
    lat = {r["checkpointing"]: r for r in ok if r["what"].startswith("latent (paper")}
    ae = next((r for r in ok if r["net"] == "autoencoder"), None)
    if not pix or not lat or ae is None:
        return "(no 16 GB statement: a row failed)"
    size = max(r["size"] for r in pix)
    pix = {r["checkpointing"]: r for r in pix if r["size"] == size}
    how = "measured at 128^3" if size == 128 else f"activations measured at {size}^3, x{(128 // size) ** 3}"

    def say(r: dict | None) -> str:
        if r is None:
            return "not measured"
        n = _batch_that_fits(r)
        return f"about {gpu_estimate_mib(r) / GIB:.1f} GiB (" + (f"batch {n} fits" if n == 1 else
                                                                   f"roughly batch {n} fits" if n else
                                                                   "does not fit") + ")"

    return (f"On a 16 GB GPU (fp32; CPU memory stands in for GPU memory, 14 GiB left to the step for a CUDA "
            f"context and the allocator's cache): one training step of the pixel paper preset at 128^3 needs "
            f"{say(pix.get(False))} without activation checkpointing and {say(pix.get(True))} with it ({how}). "
            f"The latent paper denoiser for the same heads needs {say(lat.get(False))} without and "
            f"{say(lat.get(True))} with checkpointing, and the small autoencoder's own step "
            f"({ae['size']}^3 crops, batch {ae['batch']}) grows the RSS by {(ae['peak_mib'] - ae['before_mib']) / GIB:.1f} GiB.")


def render(out: dict) -> str:
    env = out["environment"]
    lines = [f"CPU: {env['cpu']}, capability {env['cpu_capability']}, mkldnn bf16 {env['mkldnn_bf16_supported']}, "
             f"torch {env['torch']}, {env['threads']} thread(s); precisions {', '.join(out['precisions'])}"
             + (" (--quick)" if out["quick"] else ""), ""]
    return "\n".join([*lines, *render_sampling(out["sampling"], env["threads"]), *render_training(out["training_step"])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="fp32 only; the pixel training step at 64^3 only")
    ap.add_argument("--render", type=Path, help="only rewrite the Markdown of this results JSON")
    ap.add_argument("--model", default="demo-latent",
                    help="latent run folder or shipped name to time (default demo-latent; 'untrained': small/small "
                         "with random weights, or when the name is not installed)")
    ap.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance weight of the sampling rows")
    ap.add_argument("--cond-factor", type=int, default=1,
                    help="with --model untrained: the mask's space-to-depth factor (train --cond-factor)")
    ap.add_argument("--sampling-only", action="store_true", help="skip the training-step rows")
    ap.add_argument("--probe", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.render:
        out = json.loads(args.render.read_text())
        write_results(args.render.stem, out, render(out))
        return
    import torch

    torch.set_num_threads(args.threads)
    if args.probe:
        spec = json.loads(args.probe)
        print(json.dumps(PROBES[spec["probe"]](spec)))
        return
    from synthkit.runtime.precision import bf16_supported

    precisions = ["fp32"] + (["bf16"] if bf16_supported("cpu") and not args.quick else [])
    env = environment(args.threads)  # includes cpu_capability and mkldnn_bf16_supported
    out: dict[str, Any] = {"benchmark": "latent", "quick": args.quick, "environment": env, "precisions": precisions}
    with tempfile.TemporaryDirectory(prefix="bench-latent-") as tmp:
        run, label = _sampling_run(args.model, Path(tmp), args.cond_factor)
        if args.guidance != 1.0:
            label += f", guidance {args.guidance:g}"
        out["sampling_model"] = label
        out["sampling"] = measure_sampling(args, precisions, run, label)
    out["training_step"] = [] if args.sampling_only else measure_training(args, precisions)
    md = render(out)
    name = "latent_quick" if args.quick else "latent"
    write_results(name + ("_sampling" if args.sampling_only else ""), out, md)
    print(md)


if __name__ == "__main__":
    main()
