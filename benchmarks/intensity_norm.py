"""How much label contrast does preprocessing keep? (issue 20, item 1)

Before any training: the tumour's label contrast (:func:`synthkit.metrics.label_fidelity.label_contrast`)
on the raw volume and after ``synthkit.preprocess.preprocess_case`` with each intensity rule, on
the demo's held-out subjects and on a BraTS-like case derived from them (the lesion split into
necrotic core, enhancing rim and oedema; only lesion labels plus the brain label, as the paper's
BraTS setup). Also the share of each label's voxels above the upper bound (flattened to +1).

    python benchmarks/intensity_norm.py [--size 128] [--n 16]

Writes ``benchmarks/results/intensity_norm.{md,json}``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import environment, write_results

RULES = {
    "head 0.5/99.5 (before)": {"intensity_bounds": "head", "clip_percentiles": (0.5, 99.5)},
    "head 0.5/99.9": {"intensity_bounds": "head", "clip_percentiles": (0.5, 99.9)},
    "head 0/100 (no clip)": {"intensity_bounds": "head", "clip_percentiles": (0.0, 100.0)},
    "per_label 0.5/99.5 (new default)": {"intensity_bounds": "per_label", "clip_percentiles": (0.5, 99.5)},
}


def _volume(arr: np.ndarray, affine: np.ndarray):
    from synthkit.io.volume import Volume

    return Volume(arr[None].astype(np.float32), affine)


def brats_like(img: np.ndarray, lab: np.ndarray) -> np.ndarray:
    """BraTS labels from a demo subject: 1 necrotic core (lesion darker than the brain's 90th
    percentile), 4 enhancing rim (brighter), 2 oedema (3 voxels around the lesion, inside the
    head); the head itself unlabelled (the brain label rule adds it)."""
    lesion = lab == 2
    bright = img > np.percentile(img[lab == 1], 90)
    out = np.zeros(lab.shape, np.int16)
    out[ndimage.binary_dilation(lesion, iterations=3) & (lab == 1)] = 2
    out[lesion & ~bright] = 1
    out[lesion & bright] = 4
    return out


def _measure(img: np.ndarray, lab: np.ndarray, affine: np.ndarray, labels: list[int], cfg) -> dict:
    from synthkit.metrics.label_fidelity import label_contrast
    from synthkit.preprocess import preprocess_case

    pre = preprocess_case(_volume(img, affine), _volume(lab, affine), cfg)
    x, m = pre.image[0].numpy(), pre.labels.numpy()
    out = {}
    for v in labels:
        region = m == v
        out[str(v)] = {"contrast": label_contrast(x, m, v),
                       "flattened_top": float((x[region] >= 1.0 - 1e-6).mean()) if region.any() else float("nan")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--first", type=int, default=1000)
    args = ap.parse_args()

    from synthkit.config import PreprocessConfig
    from synthkit.io.demo_cohort import _subject
    from synthkit.metrics.label_fidelity import label_contrast

    rows: dict[str, dict[str, list]] = {}
    for name in RULES:
        rows[name] = {"demo": [], "brats": [], "demo_flat": [], "brats_flat": []}
    for i in range(args.first, args.first + args.n):
        img, lab, aff, _clean = _subject(np.random.default_rng([0, i]), args.size)
        lab = lab.astype(np.int16)
        blab = brats_like(img, lab)
        rows.setdefault("raw", {"demo": []})["demo"].append(label_contrast(img, lab, 2))
        for name, kw in RULES.items():
            demo_cfg = PreprocessConfig(target_shape=(args.size,) * 3, mask_labels=(1, 2), **kw)
            d = _measure(img, lab, aff, [2], demo_cfg)["2"]
            rows[name]["demo"].append(d["contrast"])
            rows[name]["demo_flat"].append(d["flattened_top"])
            brats_cfg = dataclasses.replace(demo_cfg, mask_labels=(1, 2, 3, 4), label_map={"4": 3}, brain_label=4)
            b = _measure(img, blab, aff, [3], brats_cfg)["3"]
            rows[name]["brats"].append(b["contrast"])
            rows[name]["brats_flat"].append(b["flattened_top"])
    med = {k: {kk: float(np.nanmedian(vv)) for kk, vv in v.items()} for k, v in rows.items()}
    # the reference: the linear map without clipping (the contrast is unit-free, so this is the raw
    # volume's contrast with the labels and grid that preprocessing gives; for the demo it equals
    # the contrast measured on the raw files, checked below)
    raw_d, raw_b = med["head 0/100 (no clip)"]["demo"], med["head 0/100 (no clip)"]["brats"]
    lines = [(f"Label contrast kept by preprocessing (issue 20, item 1): demo subjects {args.first}-"
             f"{args.first + args.n - 1} at {args.size}^3, medians over cases. Demo: the tumour (core + rim, "
             "label 2). BraTS-like: the same subjects relabelled (1 necrotic core, 4 enhancing rim, 2 oedema, "
             "the brain label added by the brain rule); the enhancing rim's contrast. x raw: against the linear "
             "map without clipping (same labels and grid; the metric is unit-free)."), "",
             ("| intensity rule | demo tumour contrast | x raw | tumour voxels at +1 | BraTS-like enhancing contrast | x raw "
             "| enhancing voxels at +1 |"), "|---|--:|--:|--:|--:|--:|--:|",
             f"| raw volume as written (demo labels) | {med['raw']['demo']:.3f} | | | | | |"]
    for name in RULES:
        m = med[name]
        lines.append(f"| {name} | {m['demo']:.3f} | {m['demo'] / raw_d:.2f} | {m['demo_flat']:.1%} | "
                     f"{m['brats']:.3f} | {m['brats'] / raw_b:.2f} | {m['brats_flat']:.1%} |")
    env = environment(1)
    lines += ["", f"CPU: {env['cpu']} (numpy only; no torch compute)."]
    text = "\n".join(lines) + "\n"
    print(text)
    write_results("intensity_norm", {"args": vars(args), "medians": med, "per_case": rows, "environment": env}, text)


if __name__ == "__main__":
    main()
