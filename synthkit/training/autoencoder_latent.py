"""Latent Med-DDPM training (issue 12, item 2): the same mask-concatenated denoiser and loop as
pixel Med-DDPM, trained on the latents of a frozen autoencoder (LDM: Rombach et al. 2022).

Per training case, once (cached on disk like the preprocessed cohort)::

    x     (C_img, D, H, W) in [-1, 1]      the preprocessed image at preprocess.target_shape
    z     = scale_factor * encoder_mean(x)  (C_lat, D/f, H/f, W/f), unit variance on average
    z     = (z - latent_shift) / latent_scale  per channel, with latent_norm "channel" (the default
                                            for new runs): each channel's mean/std over the
                                            training latents, measured once and recorded
    cond  = avg_pool_f(one_hot(mask))       (K, D/f, H/f, W/f) in [0, 1]: partial volumes kept,
                                            so a tumour smaller than one latent voxel survives

Training is then :class:`synthkit.training.trainer.Trainer` on ``{"image": z, "cond": cond}``:
``loss = diffusion.training_loss(denoiser, z, cond)`` with the denoiser's input
``torch.cat([z_t, cond], dim=1)`` (``in_channels = C_lat + K``). Resume, EMA, DDP, presets: as for
pixel runs.

A latent run folder is a pixel run folder plus ``autoencoder/`` (a copy of the autoencoder's
``config.json`` and ``model.safetensors``); its ``config.json`` has ``model_type: "latent"`` and
the autoencoder's config (with its scale factor) under ``autoencoder``; the weights' metadata
names the autoencoder weights' SHA-256. Sampling decodes ``(z * latent_scale + latent_shift) /
scale_factor``. Why per channel: one global scale leaves some channels with a mean of 2 and others
with a std of 0.25, so at a given noise level the low-variance channels (the fine detail) are
drowned long before the others.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
from pathlib import Path
from typing import Any

import torch

from synthkit.config import LATENT_AE_FOLDER as AE_FOLDER
from synthkit.config import AutoencoderRunConfig, RunConfig
from synthkit.errors import UsageError
from synthkit.networks.autoencoder import (  # shared with pipeline.latent
    channel_stats,
    latent_cond,
    pool_cond,
    standardize_latents,
)
from synthkit.runtime import checkpoint as ckpt
from synthkit.training.trainer import Trainer

LATENT_CACHE_FORMAT = 1


def attach_autoencoder(run_dir: str | Path, ae_dir: str | Path | None) -> AutoencoderRunConfig:
    """Copy the autoencoder ``ae_dir`` (config.json + model.safetensors) into ``run_dir/autoencoder``
    (or, with ``ae_dir=None``, use the copy already there). A run keeps the autoencoder it started
    with: a different one is a UsageError. Returns the autoencoder's config."""
    from synthkit.io.atomic import atomic_path
    from synthkit.io.hashing import file_sha256
    from synthkit.training.autoencoder_eval import load_autoencoder

    dest = Path(run_dir) / AE_FOLDER
    if ae_dir is None:
        if not (dest / "model.safetensors").is_file():
            raise UsageError("a latent run needs --autoencoder AE (no autoencoder/ in the run folder)", run_dir)
        return load_autoencoder(dest)[1]
    ae_dir = Path(ae_dir)
    _, cfg = load_autoencoder(ae_dir)  # validates config and weights before anything is copied
    if cfg.scale_factor is None:
        raise UsageError("the autoencoder has no measured scale_factor (train it to a checkpoint first)", ae_dir)
    src = ae_dir / "model.safetensors"
    started = ckpt.latest_checkpoint(run_dir) is not None or (Path(run_dir) / "model.safetensors").exists()
    if started and (dest / "model.safetensors").is_file():
        if file_sha256(dest / "model.safetensors") != file_sha256(src) or \
                AutoencoderRunConfig.load(dest / "config.json") != cfg:
            raise UsageError("the run was started with another autoencoder; use its own or another --out", dest)
        return cfg
    dest.mkdir(parents=True, exist_ok=True)
    for name in ("model.safetensors", "config.json"):
        with atomic_path(dest / name, suffix=".tmp") as tmp:
            shutil.copyfile(ae_dir / name, tmp)
    return cfg


def latent_run_config(cfg: RunConfig, ae: AutoencoderRunConfig, shape: tuple[int, int, int] | None = None) -> RunConfig:
    """``cfg`` as a latent run on autoencoder ``ae``: ``model_type "latent"``, the autoencoder's
    config recorded, and the image grid ``shape`` (default: the one the autoencoder was trained at,
    or, for a config that is a latent run already, its own)."""
    pre = cfg.preprocess
    if shape is not None:
        pre = dataclasses.replace(pre, target_shape=tuple(int(s) for s in shape))
    elif cfg.model_type != "latent":
        pre = dataclasses.replace(pre, target_shape=ae.preprocess.target_shape)
    # the latents are only meaningful for images normalised as the autoencoder saw them
    pre = dataclasses.replace(pre, intensity_bounds=ae.preprocess.intensity_bounds,
                              clip_percentiles=ae.preprocess.clip_percentiles)
    return dataclasses.replace(cfg, model_type="latent", autoencoder=ae, preprocess=pre)


def prepare_latent_run(run_dir: str | Path, cfg: RunConfig, ae_dir: str | Path | None,
                       shape: tuple[int, int, int] | None = None, latent_norm: str | None = None) -> RunConfig:
    """For ``synthkit train --autoencoder AE``: the autoencoder attached to the run folder
    (:func:`attach_autoencoder`) and ``cfg`` made a latent run on it (:func:`latent_run_config`).
    ``latent_norm``: "channel" or "global"; None keeps a latent config's own and gives a config
    that becomes latent here "channel"."""
    if cfg.model_type not in ("ddpm", "latent"):
        raise UsageError(f"--autoencoder trains latent Med-DDPM; it does not combine with --model {cfg.model_type}")
    if latent_norm is None:
        latent_norm = cfg.latent_norm if cfg.model_type == "latent" else "channel"
    if latent_norm not in ("channel", "global"):
        raise UsageError(f"--latent-norm must be channel or global, got {latent_norm!r}")
    cfg = dataclasses.replace(cfg, latent_norm=latent_norm)
    return latent_run_config(cfg, attach_autoencoder(run_dir, ae_dir), shape)


class LatentDataset(torch.utils.data.Dataset):
    """``self[i] = {"image": z (C_lat, d, h, w), "cond": the denoiser's condition (K * c**3, d, h, w),
    "frac": each label's fraction of each latent voxel (K, d, h, w), "labels": nearest-subsampled
    labels (d, h, w), "index": i}``; ``records``/``case_ids`` as the image cohort. ``cond`` is
    made from ``frac``'s full-resolution source by :func:`latent_cond` (``c = cond_factor``)."""

    def __init__(self, latents: torch.Tensor, cond: torch.Tensor, labels: torch.Tensor, base: Any,
                 frac: torch.Tensor | None = None):
        self.latents, self.cond, self.labels = latents, cond, labels
        self.frac = cond if frac is None else frac
        self.records, self.case_ids, self.skipped = base.records, base.case_ids, base.skipped
        self.cfg = base.cfg
        self.images = latents
        self.base = base  # the image-space cohort (previews show its images)

    def __len__(self) -> int:
        return int(self.latents.shape[0])

    def standardize(self, shift: Any, scale: Any) -> None:
        """Standardise the latents per channel in place of the stored ones (see the module docstring)."""
        self.latents = self.images = standardize_latents(self.latents, shift, scale)

    @property
    def image_channels(self) -> int:
        return int(self.latents.shape[1])

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {"image": self.latents[i], "cond": self.cond[i], "frac": self.frac[i], "labels": self.labels[i],
                "index": i}


def _latent_key(image: torch.Tensor, ae_sha: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    h.update(f"latent-{LATENT_CACHE_FORMAT}-{ae_sha}".encode())
    h.update(str(tuple(image.shape)).encode())
    h.update(image.contiguous().numpy().tobytes())
    return h.hexdigest()


@torch.no_grad()
def encode_cohort(dataset: Any, model: torch.nn.Module, scale: float, ae_sha: str, cache_dir: Path,
                  device: str = "cpu", progress: Any = None, cond_factor: int = 1) -> LatentDataset:
    """Latents (scaled posterior means) and latent-grid masks (:func:`latent_cond`) of every case
    of ``dataset`` (a CachedCohort), the latents read from / written to ``cache_dir``
    (``latent_<key>.safetensors``, key = hash of the image and the autoencoder weights)."""
    from safetensors.torch import load_file, save

    from synthkit.io.atomic import write_bytes
    from synthkit.progress import progress_hook

    factor = model.factor
    step = progress_hook(progress, len(dataset), "encoding latents")
    zs, conds, fracs, labels = [], [], [], []
    for i in range(len(dataset)):
        item = dataset[i]
        path = cache_dir / f"latent_{_latent_key(item['image'], ae_sha)}.safetensors"
        z = None
        if path.is_file():
            try:
                z = load_file(str(path))["z"]
            except Exception:  # noqa: BLE001  (any damage: recompute)
                z = None
        if z is None:
            mean, _ = model.encode(item["image"][None].to(device))
            z = (mean[0].float().cpu() * scale).contiguous()
            write_bytes(path, save({"z": z}))
        zs.append(z)
        fracs.append(pool_cond(item["cond"], factor))
        if cond_factor != 1:
            conds.append(latent_cond(item["cond"], factor, cond_factor))
        labels.append(item["labels"][factor // 2 :: factor, factor // 2 :: factor, factor // 2 :: factor])
        step()
    frac = torch.stack(fracs)
    cond = torch.stack(conds) if conds else frac
    return LatentDataset(torch.stack(zs), cond, torch.stack(labels), dataset, frac=frac)


class LatentTrainer(Trainer):
    """:class:`Trainer` on autoencoder latents (see the module docstring). The run folder must hold
    ``autoencoder/`` (:func:`attach_autoencoder`); ``cfg.autoencoder`` must describe it."""

    weights_label = "latent denoiser weights"

    def _fit_config(self, cfg: RunConfig, cohort: Any) -> RunConfig:
        cfg = super()._fit_config(cfg, cohort)
        ae = attach_autoencoder(self.run_dir, None)
        if cfg.autoencoder is not None and cfg.autoencoder != ae:
            raise UsageError("the config's autoencoder differs from the run's autoencoder/ copy",
                             self.run_dir / AE_FOLDER)
        if ae.autoencoder.image_channels != cfg.model.image_channels:
            raise UsageError(f"the cohort has {cfg.model.image_channels} image channel(s); the autoencoder takes "
                             f"{ae.autoencoder.image_channels}", cohort.root)
        shape = tuple(int(s) for s in cfg.preprocess.target_shape)
        f = ae.autoencoder.downsample_factor * cfg.model.downsample_factor
        if any(s % f for s in shape):
            raise UsageError(f"--shape {' '.join(map(str, shape))} must be divisible by {f} (the autoencoder's "
                             f"{ae.autoencoder.downsample_factor}x times the denoiser's {cfg.model.downsample_factor}x)")
        if ae.autoencoder.downsample_factor % cfg.model.cond_factor:
            raise UsageError(f"--cond-factor {cfg.model.cond_factor} must divide the autoencoder's factor "
                             f"{ae.autoencoder.downsample_factor}")
        model = dataclasses.replace(cfg.model, image_channels=ae.autoencoder.latent_channels)
        return dataclasses.replace(cfg, model=model, autoencoder=ae)

    def _resume_mismatch(self, old: RunConfig, new: RunConfig) -> str:
        why = super()._resume_mismatch(old, new)
        if not why and old.autoencoder != new.autoencoder:
            why = "the autoencoder differs from the run's config.json"
        if not why and old.latent_norm != new.latent_norm:
            why = f"the run standardises its latents with latent_norm {old.latent_norm!r}, not {new.latent_norm!r}"
        return why or ""

    def _open_run(self, cohort: Any, cfg: RunConfig, resume: bool) -> tuple[Any, Path | None]:
        cohort, latest = super()._open_run(cohort, cfg, resume)
        self._resuming = bool(resume and latest is not None)
        return cohort, latest

    def _standardize(self) -> None:
        """Per-channel statistics: measured on this run's latents when it starts (a config that
        carries some, e.g. a shipped model's recipe, is measured again), kept on resume."""
        if self.cfg.latent_norm != "channel":
            self.cfg = dataclasses.replace(self.cfg, latent_shift=None, latent_scale=None)
            return
        if not self._resuming or self.cfg.latent_shift is None or self.cfg.latent_scale is None:
            shift, scale = channel_stats(self.dataset.latents)
            self.cfg = dataclasses.replace(self.cfg, latent_shift=shift, latent_scale=scale)
        self.dataset.standardize(self.cfg.latent_shift, self.cfg.latent_scale)

    def _check_dataset(self, cohort: Any) -> None:
        from synthkit.io.hashing import file_sha256
        from synthkit.training.autoencoder_eval import load_autoencoder

        if getattr(self.dataset, "images", None) is None:
            raise UsageError("a latent run needs images in the cohort", cohort.root)
        ae_dir = self.run_dir / AE_FOLDER
        model, ae = load_autoencoder(ae_dir, self.device)
        self.ae_sha256 = file_sha256(ae_dir / "model.safetensors")
        cache = self.run_dir / "cache" if getattr(self, "_cache_dir", None) is None else self._cache_dir
        self.dataset = encode_cohort(self.dataset, model, float(ae.scale_factor), self.ae_sha256,
                                     Path(cache), self.device, self.progress if self.dist.is_main else None,
                                     cond_factor=self.cfg.model.cond_factor)
        self._standardize()

    def _prepare_data(self, cohort: Any, cache_dir: str | Path | None) -> None:
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        super()._prepare_data(cohort, cache_dir)

    def _write_checkpoint(self, step: int, state: Any, **meta: str) -> None:
        super()._write_checkpoint(step, state, autoencoder_sha256=self.ae_sha256, **meta)

    def _preview(self, step: int) -> None:
        from synthkit.training.autoencoder_latent_preview import write_latent_preview

        try:
            write_latent_preview(self, step, self.run_dir / AE_FOLDER)
        except ImportError as e:  # viz not installed
            self.note(f"preview skipped ({e})")
