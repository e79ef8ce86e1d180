"""Sampling cost: DDPM-250 vs DDIM-{25,50,100} per volume, growth with size, peak memory.

    python benchmarks/bench_sampling.py            # full (about 5 minutes on 2 cores)
    python benchmarks/bench_sampling.py --quick    # DDIM only, 64^3 memory only

1. ``small`` preset at 32^3: wall time per volume of each sampler (precision "auto": bf16 where
   the CPU has it natively), and per-step time.
2. Time growth with size: one denoiser call at 32/48/64^3, ``small`` and ``paper`` presets, and
   the ``paper`` per-volume time extrapolated as per-call time x steps.
3. Peak memory of one no_grad denoiser call (``paper`` preset) at 64^3 and 128^3, measured as
   the peak resident set size of a fresh subprocess (ru_maxrss), minus the RSS before the call.

Writes benchmarks/results/sampling.json and sampling.md.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch
from _common import (
    environment,
    fmt_s,
    markdown_table,
    peak_rss_subprocess,
    setup_threads,
    time_interleaved,
    write_results,
)

from synthkit.config import DiffusionConfig
from synthkit.diffusion import GaussianDiffusion, sample
from synthkit.networks import build_denoiser
from synthkit.runtime.precision import autocast_context, resolve_precision

MEMORY_PROBE = """
import json, resource, time, torch
torch.set_num_threads({threads})
impl, precision, size = {impl!r}, {precision!r}, {size}
if impl == "monai":
    import sys; sys.path.insert(0, "benchmarks")
    from bench_denoiser import monai_reference
    from synthkit.config import model_config
    net = monai_reference(model_config("paper"))
else:
    from synthkit.networks import build_denoiser
    net = build_denoiser("paper")
from synthkit.runtime.precision import autocast_context
net.eval()
x = torch.randn(1, 3, size, size, size); t = torch.tensor([100])
kib = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
before = kib()
t0 = time.perf_counter()
with torch.no_grad(), autocast_context("cpu", precision):
    y = net(x, t)
dt = time.perf_counter() - t0
print(json.dumps({{"before_mib": before / 1024, "peak_mib": kib() / 1024, "seconds": dt}}))
"""


def cond_for(size: int, n: int = 1) -> torch.Tensor:
    """(N, 2, S, S, S) one-hot head ball + tumour, background dropped."""
    g = torch.stack(torch.meshgrid(*[torch.arange(size)] * 3, indexing="ij")).float()
    r = ((g - (size - 1) / 2) ** 2).sum(0).sqrt()
    head = (r < 0.42 * size).float()
    tumour = (((g - size * 0.6) ** 2).sum(0).sqrt() < size / 8).float() * head
    return torch.stack([head - tumour, tumour])[None].expand(n, -1, -1, -1, -1).contiguous()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2, help="1 is steadier on a loaded machine")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    setup_threads(args.threads)
    prec = resolve_precision("cpu", args.precision)
    out: dict = {
        "benchmark": "sampling",
        "environment": environment(args.threads),
        "precision": prec,
    }
    lines: list[str] = []

    # 1. samplers, small preset, 32^3 --------------------------------------------------------
    size, T = 32, 250
    net = build_denoiser("small")
    torch.manual_seed(0)  # benchmark only: fill the zero-initialised layers so samples vary
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    diffusion = GaussianDiffusion(DiffusionConfig(timesteps=T))
    cond = cond_for(size)
    samplers = (
        [("ddim", 25), ("ddim", 50)]
        if args.quick
        else [("ddpm", None), ("ddim", 25), ("ddim", 50), ("ddim", 100)]
    )
    rows, sampler_res = [], []
    sample(
        net,
        diffusion,
        cond,
        sampler="ddim",
        steps=2,
        image_channels=1,
        autocast=prec,
        generator=torch.Generator().manual_seed(0),
    )  # warm-up
    for name, steps in samplers:
        t0 = time.perf_counter()
        sample(
            net,
            diffusion,
            cond,
            sampler=name,
            steps=steps,
            image_channels=1,
            autocast=prec,
            generator=torch.Generator().manual_seed(0),
        )
        dt = time.perf_counter() - t0
        n = steps or T
        sampler_res.append({"sampler": name, "steps": n, "seconds": dt, "per_step_s": dt / n})
        print(f"  small {size}^3 {name}-{n}: {dt:.2f} s ({dt / n * 1000:.0f} ms/step)", flush=True)
    ddpm_s = next((r["seconds"] for r in sampler_res if r["sampler"] == "ddpm"), None)
    per_step = min(r["per_step_s"] for r in sampler_res)
    for r in sampler_res:
        speed = (ddpm_s / r["seconds"]) if ddpm_s else (T * per_step / r["seconds"])
        rows.append(
            [
                f"{r['sampler'].upper()}-{r['steps']}",
                fmt_s(r["seconds"]),
                f"{r['per_step_s'] * 1000:.0f}",
                f"{speed:.1f}",
            ]
        )
    out["samplers_small_32"] = sampler_res
    lines += [
        f"Sampling one 32^3 volume, `small` preset ({prec}), {args.threads} threads",
        markdown_table(["sampler", "s / volume", "ms / step", "x vs DDPM-250"], rows),
        "",
    ]

    # 2. growth with size (one denoiser call) ------------------------------------------------
    growth = []
    x_t = torch.tensor([100])
    for preset in ("small", "paper"):
        model = build_denoiser(preset).eval()
        for s in (32, 48, 64):
            x = torch.randn(1, 3, s, s, s)

            def call(model=model, x=x):
                with torch.no_grad(), autocast_context("cpu", prec):
                    model(x, x_t)

            tm = time_interleaved({"call": call}, repeats=1 if preset == "paper" else 3)["call"]
            growth.append(
                {
                    "preset": preset,
                    "size": s,
                    "call_s": tm["min_s"],
                    "ddpm250_s": tm["min_s"] * T,
                    "ddim50_s": tm["min_s"] * 50,
                }
            )
            print(f"  {preset} {s}^3 one call {tm['min_s']:.3f} s", flush=True)
        del model
    base = {g["preset"]: g["call_s"] for g in growth if g["size"] == 32}
    rows = [
        [
            g["preset"],
            f"{g['size']}^3",
            fmt_s(g["call_s"]),
            f"{g['call_s'] / base[g['preset']]:.1f}",
            fmt_s(g["ddim50_s"]),
            fmt_s(g["ddpm250_s"]),
        ]
        for g in growth
    ]
    out["growth"] = growth
    lines += [
        f"One denoiser call vs size ({prec}); per-volume = per-call x steps",
        markdown_table(
            ["preset", "size", "s / call", "x vs 32^3", "DDIM-50 s", "DDPM-250 s"], rows
        ),
        "",
    ]

    # 3. peak memory, paper preset, one no_grad call ----------------------------------------
    probes = [("ours", "fp32", 64), ("ours", "bf16", 64), ("monai", "fp32", 64)]
    if not args.quick:
        probes += [("ours", "fp32", 128), ("ours", "bf16", 128)]
    mem = []
    for impl, precision, s in probes:
        r = peak_rss_subprocess(
            MEMORY_PROBE.format(threads=args.threads, impl=impl, precision=precision, size=s)
        )
        r.update(
            impl=impl,
            precision=resolve_precision("cpu", precision),
            size=s,
            call_mib=r["peak_mib"] - r["before_mib"],
        )
        mem.append(r)
        print(
            f"  memory {impl} {precision} {s}^3: peak {r['peak_mib']:.0f} MiB "
            f"(+{r['call_mib']:.0f} for the call, {r['seconds']:.1f} s)",
            flush=True,
        )
    rows = [
        [
            m["impl"],
            m["precision"],
            f"{m['size']}^3",
            f"{m['peak_mib']:.0f}",
            f"{m['call_mib']:.0f}",
            fmt_s(m["seconds"]),
        ]
        for m in mem
    ]
    out["memory_paper"] = mem
    lines += [
        "Peak memory of one no_grad denoiser call, `paper` preset (fresh process, ru_maxrss)",
        markdown_table(
            ["network", "precision", "size", "peak RSS MiB", "call MiB", "call s (cold)"], rows
        ),
    ]
    table = "\n".join(lines)
    print("\n" + table)
    print("wrote", write_results("sampling" + ("_quick" if args.quick else ""), out, table))


if __name__ == "__main__":
    main()
