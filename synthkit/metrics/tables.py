"""The tables and plain-words verdicts of an evaluation result (terminal, HTML report, demo page).

**Flags** (:func:`verdicts`): a set's metric is *flagged* when it is outside what real images
reach at this sample size:

* 3D-FID above twice the real split-half floor;
* a label's contrast below 0.8x or above 1.25x the real median (``ratio_to_real``);
* a label's segmentation Dice below 0.8x the cross-fitted real ceiling;
* a tissue distance (intensity W1, spectrum, CJV) above twice the real split-half reference.
"""

from __future__ import annotations

from typing import Any

__all__ = ["FIDELITY_RULES", "PRDC_HEADER", "TABLE_HEADER", "fidelity_header", "fidelity_rows", "prdc_rows",
           "table_rows", "tissue_header", "tissue_rows", "verdict_lines", "verdicts"]

FIDELITY_RULES = ("flagged when: FID > 2x the real split-half floor; label contrast outside 0.8-1.25x real; "
                  "Dice < 0.8x the real ceiling; a tissue distance > 2x the real split-half reference")
CONTRAST_BAND = (0.8, 1.25)
DICE_MIN = 0.8
DISTANCE_MAX = 2.0
TISSUE = (("intensity_w1", "intensity W1"), ("spectrum", "spectrum (dB)"), ("cjv", "CJV"))

def _fmt(d: dict | None, digits: int = 4) -> str:
    if not d or d.get("value") is None:
        return "-"
    return f"{d['value']:.{digits}f}" + ("" if d.get("std") is None else f"±{d['std']:.{digits}f}")


def table_rows(result: dict[str, Any]) -> list[list[str]]:
    """Rows like the paper's Table I: method, MSE, MMD, FID, MS-SSIM (diversity), paired MS-SSIM."""
    rows = [[r["name"], _fmt(r["mse"]), _fmt(r["mmd"]), _fmt(r["fid"], 3), _fmt(r["diversity"]), _fmt(r["ms_ssim"])]
            for r in result["sets"]]
    real = result["real"]
    rows.append([f"Real (n={real['n']})", "-", "-", "floor " + _fmt(real["fid_floor"], 3), _fmt(real["diversity"]), "-"])
    return rows


TABLE_HEADER = ["Method", "MSE↓", "MMD↓", "3D-FID↓", "MS-SSIM (diversity)", "MS-SSIM (paired)↑"]
PRDC_HEADER = ["Method", "Precision↑", "Recall↑", "Density", "Coverage↑"]


def prdc_rows(result: dict[str, Any]) -> list[list[str]]:
    """One row per set: precision, recall, density, coverage (value ± bootstrap std)."""
    names = ("precision", "recall", "density", "coverage")
    return [[r["name"], *(_fmt((r.get("prdc") or {}).get(m), 3) for m in names)] for r in result["sets"]]



def _v(d: dict | None, key: str = "value") -> float | None:
    return None if not d else d.get(key)


def _labels(result: dict[str, Any]) -> list[str]:
    return list((result["real"].get("label_fidelity") or {}).keys())


def fidelity_header(result: dict[str, Any]) -> list[str]:
    cols = ["Method"]
    for name in _labels(result):
        cols += [f"{name} contrast (x real)", f"{name} Dice (x ceiling)"]
    return cols


def fidelity_rows(result: dict[str, Any]) -> list[list[str]]:
    """Per label: median contrast with its ratio to real, mean Dice with its ratio to the ceiling."""
    def cell(d: dict | None, ratio_key: str) -> str:
        if not d or d.get("value") is None:
            return "-"
        r = d.get(ratio_key)
        return f"{d['value']:.2f}" + (f" ({r:.2f}x)" if r is not None else "")

    rows = []
    for r in result["sets"]:
        lf = r.get("label_fidelity")
        row = [r["name"]]
        for name in _labels(result):
            e = (lf or {}).get(name) or {}
            row += [cell(e.get("contrast"), "ratio_to_real"), cell(e.get("dice"), "ratio_to_ceiling")]
        rows.append(row)
    real = result["real"]
    row = [f"Real (n={real['n']}; Dice: cross-fitted ceiling)"]
    for name in _labels(result):
        e = real["label_fidelity"][name]
        row += [cell(e.get("contrast"), ""), cell(e.get("dice"), "")]
    return [*rows, row]


def tissue_header() -> list[str]:
    return ["Method", *(t for _, t in TISSUE), "median CJV", "HF power share"]


def tissue_rows(result: dict[str, Any]) -> list[list[str]]:
    """Distances to real (lower is better) with the raw CJV and high-frequency share beside them."""
    def num(x: float | None, digits: int = 3) -> str:
        return "-" if x is None else f"{x:.{digits}f}"

    rows = []
    for r in [*result["sets"], result["real"]]:
        t = r.get("tissue") or {}
        name = r["name"] if r is not result["real"] else f"Real (n={r['n']}): split-half reference"
        rows.append([name, *(num(_v(t.get(k))) for k, _ in TISSUE), num(_v(t.get("median_cjv"))),
                     num(_v(t.get("hf_share")), 4)])
    return rows


def verdicts(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Per set: ``flagged`` (metric -> why) by the rules of the module docstring, and whether
    FID flagged it."""
    real = result["real"]
    floor = _v(real.get("fid_floor"))
    out = []
    for r in result["sets"]:
        flags: dict[str, str] = {}
        fid = _v(r.get("fid"))
        fid_flag = fid is not None and floor is not None and fid > 2 * floor
        if fid_flag:
            flags["3D-FID"] = f"{fid:.3g} > 2x floor {floor:.3g}"
        for name, e in (r.get("label_fidelity") or {}).items():
            ratio = _v(e.get("contrast"), "ratio_to_real")
            if ratio is not None and not CONTRAST_BAND[0] <= ratio <= CONTRAST_BAND[1]:
                flags[f"{name} contrast"] = f"{ratio:.2f}x real"
            dr = _v(e.get("dice"), "ratio_to_ceiling")
            if dr is not None and dr < DICE_MIN:
                flags[f"{name} Dice"] = f"{dr:.2f}x the real ceiling"
        for key, title in TISSUE:
            val, ref = _v((r.get("tissue") or {}).get(key)), _v((real.get("tissue") or {}).get(key))
            if val is not None and ref is not None and val > DISTANCE_MAX * ref:
                flags[title] = f"{val:.3g} vs real {ref:.3g}"
        out.append({"name": r["name"], "flagged": flags, "fid_flagged": fid_flag})
    return out


def verdict_lines(result: dict[str, Any]) -> list[str]:
    """One sentence per set: which metrics caught it, and whether FID missed what they caught."""
    lines = []
    for v in verdicts(result):
        if not v["flagged"]:
            lines.append(f"{v['name']}: no metric flags it (as real at this sample size).")
            continue
        caught = "; ".join(f"{k} ({why})" for k, why in v["flagged"].items())
        missed = "" if v["fid_flagged"] else " 3D-FID missed it."
        lines.append(f"{v['name']}: flagged by {caught}.{missed}")
    return lines
