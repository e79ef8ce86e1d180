"""The latent Med-DDPM kind (``model_type: "latent"``): the Med-DDPM sampling loop on the latent
grid of a frozen KL autoencoder, then its decoder (LDM: Rombach et al. 2022; MAISI for CT).

A latent run folder is a pixel run folder plus ``autoencoder/`` (``config.json`` and
``model.safetensors`` of the autoencoder it was trained on, written by ``synthkit train
--autoencoder AE``). ``config.preprocess`` is the IMAGE grid (e.g. 128^3), ``config.model`` the
denoiser on the latent grid (``image_channels`` = latent channels), ``config.autoencoder`` the
autoencoder's config with its ``scale_factor``; the denoiser's ``model.safetensors`` metadata
records the SHA-256 of the autoencoder weights it was trained on, checked at load.

Shapes for one batch (``f``: the autoencoder's downsampling per axis, 4)::

    cond   (B, K, D, H, W)       one-hot mask on the image grid        (prepare(), as the pixel kind)
    c_lat  (B, K*c^3, D/f, H/f, W/f) latent_cond(cond, f, c): pooling (+ space-to-depth), as training
    z      (B, C_lat, D/f, ...)  sample(denoiser, cat(z_t, c_lat)); no x0 clamp (latents are not
                                 in [-1, 1]); one generator per volume
    x      (B, C_img, D, H, W)   decoder(z / scale_factor[, cond]), one volume at a time, clamped to [-1, 1]
                                 (a mask-reading decoder also gets the image-grid cond);
                                 -1 outside the head (image-grid cond all zero) when asked

then :meth:`Pipeline.to_volume` puts each volume on its mask's own grid and affine, intensities
mapped through ``intensity.json`` exactly as for pixel runs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from synthkit import noise as noise_rule
from synthkit.config import LATENT_AE_FOLDER as AE_FOLDER
from synthkit.config import AutoencoderRunConfig, ConfigError, RunConfig
from synthkit.errors import CheckpointError
from synthkit.networks.autoencoder import latent_cond, standardize_latents
from synthkit.pipeline.diffusion import DiffusionPipeline
from synthkit.pipeline.pipeline import Progress
from synthkit.pipeline.registry import register_kind


def recorded_autoencoder_sha256(weights: Path) -> str | None:
    """The autoencoder SHA-256 that a latent denoiser's ``model.safetensors`` records in its
    metadata (``info.autoencoder_sha256``), or None. Reads the JSON header only."""
    from safetensors import safe_open

    try:
        with safe_open(str(weights), framework="pt", device="cpu") as f:
            doc = json.loads((f.metadata() or {}).get("synthkit", "{}"))
        sha = doc.get("info", {}).get("autoencoder_sha256")
    except Exception:  # noqa: BLE001  (any unreadable header: nothing recorded)
        return None
    return sha if isinstance(sha, str) else None


def _check_autoencoder_folder(run_dir: Path, config: RunConfig) -> AutoencoderRunConfig:
    """``config.autoencoder``, after checking that ``run_dir/autoencoder`` holds that autoencoder
    (its config) and the weights the denoiser was trained on (SHA-256); CheckpointError if not."""
    from synthkit.io.hashing import file_sha256

    ae = config.autoencoder
    if ae is None or ae.scale_factor is None:
        raise CheckpointError("a latent run's config.json must record its autoencoder with a scale_factor",
                              run_dir / "config.json")
    ae_dir = run_dir / AE_FOLDER
    weights = ae_dir / "model.safetensors"
    if not weights.is_file():
        raise CheckpointError("the latent run has no autoencoder weights (autoencoder/model.safetensors)", ae_dir)
    try:
        copy = AutoencoderRunConfig.load(ae_dir / "config.json")
    except ConfigError as e:
        raise CheckpointError(f"bad autoencoder config ({e})", ae_dir / "config.json") from None
    if copy != ae:
        raise CheckpointError("autoencoder/config.json differs from the autoencoder in the run's config.json",
                              ae_dir / "config.json")
    recorded = recorded_autoencoder_sha256(run_dir / "model.safetensors")
    if recorded is None:
        raise CheckpointError("the latent denoiser's weights record no autoencoder SHA-256",
                              run_dir / "model.safetensors")
    actual = file_sha256(weights)
    if actual != recorded:
        raise CheckpointError(f"refusing the autoencoder weights: SHA-256 {actual[:16]}... is not the "
                              f"{recorded[:16]}... the denoiser was trained on", weights)
    return ae


@register_kind("latent")
class LatentPipeline(DiffusionPipeline):
    """A loaded latent Med-DDPM run (see the module docstring); the interface of every
    :class:`~synthkit.pipeline.pipeline.Pipeline`. Samplers, steps and eta as the pixel kind
    (``ddpm`` all T steps, ``ddim``, ``dpmpp``), run on the latent grid.

    Extra attributes: ``autoencoder`` (eval mode, frozen), ``ae_config``
    (:class:`~synthkit.config.AutoencoderRunConfig`), ``autoencoder_sha256``. ``precision``
    applies to the denoiser and the decoder (None = fp32; bf16 only where native).
    """

    def __init__(self, *args: Any, autoencoder: torch.nn.Module, ae_config: AutoencoderRunConfig,
                 autoencoder_sha256: str, **kw: Any):
        super().__init__(*args, **kw)
        self.autoencoder = autoencoder
        self.ae_config = ae_config
        self.autoencoder_sha256 = autoencoder_sha256

    @classmethod
    def from_run(cls, run_dir: Path, config: RunConfig, device: str, precision: str | None = None) -> LatentPipeline:
        """The denoiser (``model.safetensors``, EMA weights) and the run's own autoencoder copy
        (``autoencoder/``), refused unless its weights are the ones the denoiser recorded."""
        from synthkit.networks.autoencoder import build_autoencoder
        from synthkit.pipeline.weights import load_network, read_intensity

        model, sha = load_network(lambda: cls.build_network(config), run_dir, device,
                                  what="latent denoiser weights")
        ae_cfg = _check_autoencoder_folder(run_dir, config)
        ae, ae_sha = load_network(lambda: build_autoencoder(ae_cfg.autoencoder), run_dir / AE_FOLDER, device,
                                  what="autoencoder weights")
        f = int(ae.factor)
        if any(int(s) % (f * config.model.downsample_factor) for s in config.preprocess.target_shape):
            raise CheckpointError(f"the image grid {tuple(config.preprocess.target_shape)} is not divisible by the "
                                  f"autoencoder's {f}x times the denoiser's {config.model.downsample_factor}x",
                                  run_dir / "config.json")
        stats = (config.latent_shift, config.latent_scale)
        if config.latent_norm == "channel" and any(s is None or len(s) != config.model.image_channels for s in stats):
            raise CheckpointError("latent_norm is \"channel\" but latent_shift/latent_scale are missing or not one per "
                                  "latent channel", run_dir / "config.json")
        k = ae_cfg.autoencoder.mask_channels
        if k and k != len(config.preprocess.mask_labels):
            raise CheckpointError(f"the autoencoder's decoder reads {k} mask label(s), the run has "
                                  f"{len(config.preprocess.mask_labels)}", run_dir / "config.json")
        if ae_cfg.autoencoder.latent_channels != config.model.image_channels:
            raise CheckpointError(f"the denoiser works on {config.model.image_channels} latent channel(s), the "
                                  f"autoencoder makes {ae_cfg.autoencoder.latent_channels}", run_dir / "config.json")
        return cls(run_dir, config, model, cls.build_schedule(config), device, read_intensity(run_dir), sha,
                   precision, autoencoder=ae, ae_config=ae_cfg, autoencoder_sha256=ae_sha)

    # -------------------------------------------------------------- shapes
    @property
    def image_channels(self) -> int:
        """Channels of the generated image (the autoencoder's), not of the latent."""
        return int(self.ae_config.autoencoder.image_channels)

    @property
    def latent_channels(self) -> int:
        return int(self.config.model.image_channels)

    @property
    def factor(self) -> int:
        """Downsampling per axis from the image grid to the latent grid."""
        return int(self.autoencoder.factor)

    @property
    def scale_factor(self) -> float:
        return float(self.ae_config.scale_factor)

    def standardize(self, z: torch.Tensor, inverse: bool = False) -> torch.Tensor:
        """Scaled latents -> the denoiser's (per-channel standardised when the run's
        ``latent_norm`` is "channel"), or back with ``inverse``."""
        return standardize_latents(z, self.config.latent_shift, self.config.latent_scale, inverse=inverse)

    def latent_cond(self, cond: torch.Tensor) -> torch.Tensor:
        """Image-grid one-hot ``cond`` ``(B, K, D, H, W)`` (what :meth:`prepare` gives) -> the
        denoiser's condition ``(B, K * c**3, D/f, H/f, W/f)``: the mapping of training
        (:func:`synthkit.networks.autoencoder.latent_cond` with the run's ``cond_factor``)."""
        return latent_cond(cond, self.factor, self.config.model.cond_factor)

    # -------------------------------------------------------------- sampling
    @torch.no_grad()
    def decode(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """The denoiser's latents ``z`` ``(B, C_lat, d, h, w)`` -> images ``(B, C_img, f*d, f*h, f*w)``
        float32 in [-1, 1] on the CPU: ``decoder(standardize(z, inverse) / scale_factor)``, one volume at a time (at
        128^3 the decoder's full-resolution activations are the memory peak). ``cond``: the image-grid
        one-hot mask ``(B, K, f*d, f*h, f*w)``, which a mask-reading decoder also takes."""
        from synthkit.runtime.precision import autocast_context

        b, _, *lat = z.shape
        out = torch.empty((b, self.image_channels, *(self.factor * int(s) for s in lat)), dtype=torch.float32)
        for i in range(b):
            zi = self.standardize(z[i : i + 1].to(self.device, torch.float32), inverse=True) / self.scale_factor
            mi = None if cond is None else cond[i : i + 1].to(self.device, torch.float32)
            with autocast_context(zi.device, self.precision):
                x = self.autoencoder.decode(zi, mi)
            out[i] = x[0].float().clamp_(-1.0, 1.0).cpu()
        return out

    @torch.no_grad()
    def sample_batch(self, cond: torch.Tensor, seeds: Sequence[int], *, sampler: str = "ddpm",
                     steps: int | None = None, eta: float = 0.0, background: Sequence[bool] | None = None,
                     progress: Progress | None = None, guidance: float = 1.0) -> torch.Tensor:
        """``cond`` ``(B, K, D, H, W)`` on the image grid -> ``(B, C_img, D, H, W)`` float32 in
        [-1, 1] on the CPU. One latent chain for the batch (one denoiser call per step on
        ``(B, C_lat + K, D/f, H/f, W/f)``), volume ``i``'s noise only from ``seeds[i]``; then
        decoding, and ``background[i]`` holds volume ``i`` at -1 outside its head in image space.
        ``progress(done, total)``: one unit per sampling step, and one for the decoding."""
        from synthkit.diffusion import sample

        self._check_batch(cond, seeds, background)
        c = cond.to(self.device, torch.float32)
        gens = [noise_rule.cpu_generator(int(s)) for s in seeds]
        total: list[int] = [0]

        def step(done: int, n: int) -> None:
            total[0] = n + 1
            if progress is not None:
                progress(done, n + 1)

        z = sample(self.model, self.diffusion, self.latent_cond(c), sampler=sampler, steps=steps, eta=eta,
                   generator=gens, image_channels=self.latent_channels, clip_x0=False, clamp_output=False,
                   progress=step, autocast=self.precision, guidance=guidance)
        x = self.decode(z, c)
        bg = self.background_mask(c, background)
        if bg is not None:
            x = x.masked_fill_(bg.cpu(), -1.0)
        if progress is not None:
            progress(total[0], total[0])
        return x
