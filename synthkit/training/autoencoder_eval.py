"""Loading a trained autoencoder and measuring its reconstructions of a cohort.

:func:`evaluate_autoencoder` preprocesses every case to the autoencoder's grid (its own
PreprocessConfig: intensities in [-1, 1]), encodes and decodes the whole volume at once
(posterior mean), and reports per case the PSNR and SSIM inside the head (``labels > 0``; data
range = the case's intensity range inside the head on that grid; channels averaged), and their
means. With ``clean`` (a noise-free copy of the cohort, e.g. ``synthkit cohort demo
--clean-copy``) it also reports the noise ceiling ``psnr_ceiling`` (the noise-free volume
against the noisy one: what a perfect denoiser would score against the noisy input) and
``psnr_clean`` (the reconstruction against the noise-free volume).
"""

from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any

import torch

from synthkit.config import AutoencoderRunConfig
from synthkit.errors import UsageError


def load_autoencoder(ae_dir: str | Path, device: str = "cpu") -> tuple[torch.nn.Module, AutoencoderRunConfig]:
    """``(model in eval mode on device, its config)`` from an autoencoder run folder
    (``config.json`` + ``model.safetensors``, the EMA weights). The latent scale factor is
    ``cfg.scale_factor``. Raises ConfigError / CheckpointError / UsageError naming the file."""
    from synthkit.networks.autoencoder import build_autoencoder
    from synthkit.runtime.checkpoint import check_state_dict, load_weights

    ae_dir = Path(ae_dir)
    if not ae_dir.is_dir():
        raise UsageError("not an autoencoder run folder", ae_dir)
    cfg = AutoencoderRunConfig.load(ae_dir / "config.json")
    weights = ae_dir / "model.safetensors"
    state = load_weights(weights)
    model = build_autoencoder(cfg.autoencoder)
    check_state_dict(model, state, weights, "autoencoder weights")
    model.load_state_dict(state)
    return model.to(device).eval(), cfg


def _metrics(x: torch.Tensor, y: torch.Tensor, head: torch.Tensor) -> tuple[float, float]:
    """Mean over channels of (PSNR, SSIM) of ``y`` against ``x`` (C, D, H, W) inside ``head``."""
    from synthkit.training.autoencoder_data import masked_psnr, masked_ssim

    ps, ss = [], []
    for c in range(x.shape[0]):
        v = x[c][head]
        rng = float(v.max() - v.min()) or 1.0
        ps.append(masked_psnr(x[c], y[c], head, rng))
        ss.append(masked_ssim(x[c], y[c], head, rng))
    return sum(ps) / len(ps), sum(ss) / len(ss)


def _clean_volumes(clean: str | Path, cfg: AutoencoderRunConfig, data: Any, cache: Path, progress: Any) -> dict:
    """Noise-free volumes on the noisy cases' grids and intensity scale: ``{case_id: (C, D, H, W)}``.
    The clean copy is preprocessed without clipping, then mapped with each noisy case's bounds."""
    from synthkit.cache import cache_cohort
    from synthkit.io import discover_cohort

    pre = dataclasses.replace(cfg.preprocess, clip_percentiles=(0.0, 100.0))
    clean_data = cache_cohort(discover_cohort(clean), pre, cache / "clean", progress=progress)
    index = {cid: i for i, cid in enumerate(clean_data.case_ids)}
    out = {}
    for i, cid in enumerate(data.case_ids):
        if cid not in index:
            raise UsageError(f"the clean copy has no case {cid}", clean)
        j = index[cid]
        rc, rn = clean_data.records[j], data.records[i]
        if tuple(rc.output_affine) != tuple(rn.output_affine):
            raise UsageError(f"case {cid} of the clean copy is not on the cohort's grid", clean)
        x = clean_data.images[j].double()
        lo_c, hi_c = (torch.tensor(v, dtype=torch.float64)[:, None, None, None] for v in (rc.lo, rc.hi))
        lo_n, hi_n = (torch.tensor(v, dtype=torch.float64)[:, None, None, None] for v in (rn.lo, rn.hi))
        raw = (x + 1.0) / 2.0 * (hi_c - lo_c) + lo_c
        out[cid] = ((raw - lo_n) * 2.0 / (hi_n - lo_n) - 1.0).clamp(-1.0, 1.0).float()
    return out


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in rows if math.isfinite(r[key])]
    return sum(vals) / len(vals) if vals else math.nan


def autoencoder_folder(ae: str | Path) -> Path:
    """The autoencoder run folder meant by ``ae``: itself, or the ``autoencoder/`` of a latent run
    folder (only latent runs hold one). Shipped model names are resolved by the CLI."""
    from synthkit.config import LATENT_AE_FOLDER

    p = Path(ae)
    inner = p / LATENT_AE_FOLDER
    return inner if (inner / "config.json").is_file() else p


def evaluate_autoencoder(ae_dir: str | Path, cohort: str | Path, *, clean: str | Path | None = None,
                         device: str = "cpu", precision: str = "fp32", cache_dir: str | Path | None = None,
                         progress: Any = None) -> dict[str, Any]:
    """The report (see the module docstring): ``{"autoencoder", "shape", "precision", "cases":
    [{"case_id", "psnr", "ssim", ...}], "mean": {...}, "skipped": [...]}``."""
    from synthkit.cache import cache_cohort
    from synthkit.io import discover_cohort
    from synthkit.preprocess.case import one_hot
    from synthkit.progress import progress_hook
    from synthkit.training.autoencoder_preview import reconstruct
    from synthkit.training.precision import resolve_training_precision

    model, cfg = load_autoencoder(autoencoder_folder(ae_dir), device)
    if precision not in ("fp32", "bf16"):
        raise UsageError(f"--precision must be fp32 or bf16, not {precision!r}")
    prec = resolve_training_precision(precision, device)
    found = discover_cohort(cohort)
    with tempfile.TemporaryDirectory(prefix="synthkit-ae-eval-") as tmp:
        cache = Path(cache_dir) if cache_dir is not None else Path(tmp)
        data = cache_cohort(found, cfg.preprocess, cache, progress=progress)
        if data.images is None:
            raise UsageError("the cohort has no images to reconstruct", cohort)
        if data.image_channels != cfg.autoencoder.image_channels:
            raise UsageError(f"the cohort has {data.image_channels} image channel(s); the autoencoder "
                             f"takes {cfg.autoencoder.image_channels}", cohort)
        refs = _clean_volumes(clean, cfg, data, cache, progress) if clean is not None else {}
    step = progress_hook(progress, len(data), "reconstructing")
    rows = []
    for i, cid in enumerate(data.case_ids):
        x = data.images[i]
        head = data.labels[i] > 0
        if not bool(head.any()):
            head = torch.ones_like(head)
        mask = one_hot(data.labels[i], tuple(cfg.preprocess.mask_labels)) if model.needs_mask else None
        y = reconstruct(model, x, device=device, autocast=prec.autocast if prec.used != "fp32" else None, mask=mask)
        psnr, ssim = _metrics(x, y, head)
        row = {"case_id": cid, "psnr": psnr, "ssim": ssim}
        if cid in refs:
            row["psnr_clean"] = _metrics(refs[cid], y, head)[0]
            row["psnr_ceiling"] = _metrics(x, refs[cid], head)[0]
        rows.append(row)
        step()
    keys = [k for k in ("psnr", "ssim", "psnr_clean", "psnr_ceiling") if rows and k in rows[0]]
    return {"autoencoder": str(Path(ae_dir)), "shape": list(cfg.preprocess.target_shape),
            "precision": prec.used, "scale_factor": cfg.scale_factor, "cases": rows,
            "mean": {k: _mean(rows, k) for k in keys},
            "skipped": [{"case_id": c, "reason": r} for c, r in data.skipped]}
