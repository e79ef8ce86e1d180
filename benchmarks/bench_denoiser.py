"""Denoiser speed: synthkit's U-Net vs MONAI's DiffusionModelUNet, identical config, same weights.

    python benchmarks/bench_denoiser.py            # paper preset, 32^3 (3 rounds) and 64^3 (1)
    python benchmarks/bench_denoiser.py --quick    # 32^3 only, 2 rounds

For each size: forward (no_grad, eval) and one training step (forward, L1 loss, backward, Adam
step) at batch 1, timed interleaved. Columns: MONAI fp32 (the baseline), ours fp32, ours bf16
(autocast; falls back to fp32 where the CPU has no native bf16) and, for reference, MONAI
under the same bf16 autocast. Before timing, both networks get the same random weights and
their fp32 outputs are compared (max abs difference recorded). Writes
benchmarks/results/denoiser.json and denoiser.md. Target: >= 1.5x MONAI fp32 (fwd and step).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # monai_compat: test-only code

import torch
from _common import (
    environment,
    fmt_s,
    markdown_table,
    setup_threads,
    time_interleaved,
    write_results,
)
from monai_compat import convert_monai_state_dict, monai_reference

from synthkit.config import model_config
from synthkit.networks import Denoiser3D, count_parameters
from synthkit.runtime.precision import autocast_context


def same_weights(cfg, seed: int = 0):
    """(monai, ours) with identical random weights (zero-initialised layers filled too)."""
    torch.manual_seed(seed)  # benchmark script: the global RNG only initialises weights
    ref = monai_reference(cfg)
    with torch.no_grad():
        for p in ref.parameters():
            if not p.any():
                p.normal_(0, 0.02)
    ours = Denoiser3D(cfg)
    ours.load_state_dict(convert_monai_state_dict(ref.state_dict()), strict=True)
    return ref, ours


def forward_fn(net, x, t, precision):
    def run():
        net.eval()
        ctx = autocast_context("cpu", precision) if precision else contextlib.nullcontext()
        with torch.no_grad(), ctx:
            net(x, t)

    return run


def step_fn(net, x, t, precision):
    opt = torch.optim.Adam(net.parameters(), lr=1e-5)
    target = torch.randn(x.shape[0], 1, *x.shape[2:])

    def run():
        net.train()
        ctx = autocast_context("cpu", precision) if precision else contextlib.nullcontext()
        with ctx:
            out = net(x, t)
        loss = (out.float() - target).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="paper")
    ap.add_argument("--sizes", type=int, nargs="+", default=None)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2, help="1 is steadier on a loaded machine")
    ap.add_argument("--quick", action="store_true", help="32^3 only, 2 rounds")
    ap.add_argument("--no-monai-bf16", action="store_true", help="skip the MONAI bf16 column")
    args = ap.parse_args()
    sizes = args.sizes or ([32] if args.quick else [32, 64])
    repeats = args.repeats or (2 if args.quick else 3)
    setup_threads(args.threads)

    cfg = model_config(args.preset)
    ref, ours = same_weights(cfg)
    n_params = count_parameters(ours)
    assert n_params == sum(p.numel() for p in ref.parameters())

    # correctness: same weights, same input -> same output in fp32
    s0 = min(sizes)
    x = torch.randn(2, cfg.in_channels, s0, s0, s0)
    t = torch.tensor([3, 170])
    with torch.no_grad():
        a, b = ref.eval()(x, t), ours.eval()(x, t)
    max_diff = float((a - b).abs().max())
    rel_diff = float((a - b).norm() / a.norm())
    print(
        f"{args.preset}: {n_params:,} params; fp32 output vs MONAI at {s0}^3: "
        f"max |diff| {max_diff:.2e} (relative L2 {rel_diff:.2e}, output scale {a.abs().mean():.3f})"
    )

    variants = {"monai_fp32": (ref, None), "ours_fp32": (ours, None), "ours_bf16": (ours, "bf16")}
    if not args.no_monai_bf16:
        variants["monai_bf16"] = (ref, "bf16")
    results = []
    for size in sizes:
        x = torch.randn(1, cfg.in_channels, size, size, size)
        t = torch.tensor([100])
        for op, make in (("forward", forward_fn), ("train_step", step_fn)):
            fns = {k: make(net, x, t, prec) for k, (net, prec) in variants.items()}
            # big volumes: a single round (the forward rounds already created the kernels)
            big = size >= 64
            timing = time_interleaved(fns, repeats=1 if big else repeats, warmup=0 if big else 1)
            base, cbase = timing["monai_fp32"]["min_s"], timing["monai_fp32"]["cpu_min_s"]
            row = {
                "size": size,
                "op": op,
                "timing": timing,
                "speedup_fp32": base / timing["ours_fp32"]["min_s"],
                "speedup_bf16": base / timing["ours_bf16"]["min_s"],
                "cpu_speedup_fp32": cbase / timing["ours_fp32"]["cpu_min_s"],
                "cpu_speedup_bf16": cbase / timing["ours_bf16"]["cpu_min_s"],
            }
            results.append(row)
            print(
                f"  {size}^3 {op:<10} "
                + "  ".join(f"{k} {v['min_s']:.3f}s" for k, v in timing.items()),
                flush=True,
            )

    headers = [
        "size",
        "op",
        "MONAI fp32 s",
        "ours fp32 s",
        "ours bf16 s",
        "x fp32",
        "x bf16",
        "x fp32 (cpu)",
        "x bf16 (cpu)",
    ] + ([] if args.no_monai_bf16 else ["MONAI bf16 s"])
    rows = []
    for r in results:
        tm = r["timing"]
        row = [
            f"{r['size']}^3",
            r["op"],
            fmt_s(tm["monai_fp32"]["min_s"]),
            fmt_s(tm["ours_fp32"]["min_s"]),
            fmt_s(tm["ours_bf16"]["min_s"]),
            f"{r['speedup_fp32']:.2f}",
            f"{r['speedup_bf16']:.2f}",
            f"{r['cpu_speedup_fp32']:.2f}",
            f"{r['cpu_speedup_bf16']:.2f}",
        ]
        if not args.no_monai_bf16:
            row.append(fmt_s(tm["monai_bf16"]["min_s"]))
        rows.append(row)
    table = markdown_table(headers, rows)
    env = environment(args.threads)
    print(
        f"\nDenoiser `{args.preset}` ({n_params:,} params), batch 1, {args.threads} threads, "
        f"min of {repeats} interleaved rounds (1 at >= 64^3); x = speedup vs MONAI fp32 in "
        "wall time, (cpu) = in process CPU time"
    )
    print(table)
    payload = {
        "benchmark": "denoiser",
        "preset": args.preset,
        "params": n_params,
        "equivalence": {"size": s0, "max_abs_diff": max_diff, "rel_l2_diff": rel_diff},
        "environment": env,
        "repeats": repeats,
        "results": results,
    }
    print("wrote", write_results("denoiser" + ("_quick" if args.quick else ""), payload, table))


if __name__ == "__main__":
    main()
