"""The classic augmentation baseline: nnU-Net-style transforms with torchio.

The paper's "Augmented images" rows (Table II) come from nnU-Net's augmentation applied to the
real training cases. :func:`augment_case` reproduces that pipeline with torchio, in nnU-Net's
order and with its default ranges and probabilities (nnU-Net v2 ``get_training_transforms``):

==========================  ======================================================  ========
transform                   parameters                                              p
==========================  ======================================================  ========
rotation (one resampling    each axis U(-30°, 30°)                                  0.2
together with scaling)
scaling                     isotropic factor U(0.7, 1.4)                            0.2
elastic deformation         torchio B-spline, 7 control points, ≤ 7.5 mm            0.2 [*]
Gaussian noise              std U(0, √0.1) (z-scored intensities)                   0.1
Gaussian blur               σ U(0.5, 1) voxels                                      0.2
brightness (multiplicative) factor U(0.75, 1.25) per channel                        0.15
contrast                    factor U(0.75, 1.25) about the mean, range preserved    0.15
gamma, inverted image       γ from (0.7, 1) or (1, 1.5), mean/std retained          0.1
gamma                       γ from (0.7, 1) or (1, 1.5), mean/std retained          0.3
mirroring                   each axis                                               0.5
==========================  ======================================================  ========

[*] nnU-Net v2 ships with elastic deformation switched off; nnU-Net v1 and the issue include it.

Image and label map are transformed together (one ``tio.Subject``); images are interpolated
linearly, the label map with nearest neighbour. As in nnU-Net, the intensity transforms act on
z-scored images (per channel); the result is mapped back to the case's own intensity scale, so
an augmented copy looks like a real case on disk.

**Randomness.** torchio draws every random number from torch's *global* RNG. To keep the
library's promise (never touch global RNG state, same seed -> same output), each call runs
inside ``torch.random.fork_rng(devices=[])`` (saves the CPU RNG state and restores it on exit)
and seeds the forked CPU generator with ``seed``. Only the CPU generator is seeded, so CUDA RNG
state is not touched either. The sampled parameters of every transform are returned
(torchio's deterministic twins, from ``subject.applied_transforms``) for the manifest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torchio as tio
from torchio.transforms.augmentation import RandomTransform
from torchio.transforms.intensity_transform import IntensityTransform

from synthkit.io.volume import Volume, grid_mismatch


@dataclass(frozen=True)
class ClassicAugmentConfig:
    """Probabilities and ranges of the classic pipeline (nnU-Net v2 defaults; module docstring)."""

    p_rotation: float = 0.2
    rotation_degrees: float = 30.0
    p_scale: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    p_elastic: float = 0.2
    elastic_control_points: int = 7
    elastic_max_displacement_mm: float = 7.5
    p_noise: float = 0.1
    noise_std_max: float = math.sqrt(0.1)
    p_blur: float = 0.2
    blur_sigma_voxels: tuple[float, float] = (0.5, 1.0)
    p_brightness: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    p_contrast: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    p_gamma_inverted: float = 0.1
    p_gamma: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    p_mirror: float = 0.5


def _u(a: float, b: float) -> float:
    return float(torch.empty(1).uniform_(a, b).item())


def _coin(p: float) -> bool:
    return bool(torch.rand(1).item() < p)


class RandomNnunetSpatial(RandomTransform):
    """Rotation (p_rotation) and isotropic scaling (p_scale) sampled separately, as nnU-Net does,
    applied in one resampling by the deterministic ``tio.Affine``."""

    def __init__(self, cfg: ClassicAugmentConfig, **kwargs: Any):
        super().__init__(**kwargs)
        self.cfg = cfg

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        c = self.cfg
        rotate, scale = _coin(c.p_rotation), _coin(c.p_scale)
        if not (rotate or scale):
            return subject
        d = c.rotation_degrees
        degrees = tuple(_u(-d, d) for _ in range(3)) if rotate else (0.0, 0.0, 0.0)
        s = _u(*c.scale_range) if scale else 1.0
        return tio.Affine(
            scales=(s, s, s), degrees=degrees, translation=(0.0, 0.0, 0.0), center="image",
            default_pad_value="minimum", image_interpolation="linear", label_interpolation="nearest",
        )(subject)


class NnunetIntensity(IntensityTransform):
    """Deterministic brightness, contrast and gamma per channel (the twin of
    :class:`RandomNnunetIntensity`); a factor of 1 / gamma of 1 means "not applied"."""

    def __init__(
        self,
        brightness: list[float],
        contrast: list[float],
        gamma_inverted: list[float],
        gamma: list[float],
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.brightness, self.contrast = brightness, contrast
        self.gamma_inverted, self.gamma = gamma_inverted, gamma
        self.args_names = ["brightness", "contrast", "gamma_inverted", "gamma"]

    @staticmethod
    def _gamma(x: torch.Tensor, g: float, invert: bool) -> torch.Tensor:
        """nnU-Net's gamma: on the [0, 1]-rescaled channel, mean and std retained."""
        if g == 1.0:
            return x
        if invert:
            x = -x
        mean, std = x.mean(), x.std()
        lo, hi = x.min(), x.max()
        rng = (hi - lo).clamp_min(1e-7)
        y = ((x - lo) / rng) ** g * rng + lo
        y = (y - y.mean()) / y.std().clamp_min(1e-7) * std + mean
        return -y if invert else y

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        for image in self.get_images(subject):
            chans = []
            for i, x in enumerate(image.data.float()):
                x = x * self.brightness[i]
                if self.contrast[i] != 1.0:
                    lo, hi, m = x.min(), x.max(), x.mean()
                    x = ((x - m) * self.contrast[i] + m).clamp(lo, hi)
                x = self._gamma(x, self.gamma_inverted[i], invert=True)
                x = self._gamma(x, self.gamma[i], invert=False)
                chans.append(x)
            image.set_data(torch.stack(chans))
        return subject


class RandomNnunetIntensity(RandomTransform, IntensityTransform):
    """Samples brightness, contrast and (inverted) gamma per channel with nnU-Net's
    probabilities, then applies :class:`NnunetIntensity`."""

    def __init__(self, cfg: ClassicAugmentConfig, channels: int, **kwargs: Any):
        super().__init__(**kwargs)
        self.cfg, self.channels = cfg, channels

    def _gamma(self, p: float) -> float:
        if not _coin(p):
            return 1.0
        lo, hi = self.cfg.gamma_range
        if lo < 1.0 and _coin(0.5):
            return _u(lo, 1.0)
        return _u(max(lo, 1.0), hi)

    def apply_transform(self, subject: tio.Subject) -> tio.Subject:
        c, n = self.cfg, self.channels
        brightness = [_u(*c.brightness_range) if _coin(c.p_brightness) else 1.0 for _ in range(n)]
        contrast = [_u(*c.contrast_range) if _coin(c.p_contrast) else 1.0 for _ in range(n)]
        gamma_inv = [self._gamma(c.p_gamma_inverted) for _ in range(n)]
        gamma = [self._gamma(c.p_gamma) for _ in range(n)]
        return NnunetIntensity(brightness, contrast, gamma_inv, gamma)(subject)


def classic_transform(
    cfg: ClassicAugmentConfig,
    spacing: tuple[float, float, float],
    shape: tuple[int, int, int],
    channels: int,
) -> tio.Compose:
    """The composed pipeline for one case of ``shape`` voxels of ``spacing`` mm.

    Blur sigma is converted from voxels to torchio's mm; the elastic displacement is capped per
    axis below half the B-spline control-grid spacing (no folding) for small fields of view.
    """
    mean_spacing = float(np.mean(spacing))
    b0, b1 = cfg.blur_sigma_voxels
    extent = np.asarray(shape, dtype=float) * np.asarray(spacing, dtype=float)
    grid = extent / max(cfg.elastic_control_points - 2, 1)
    max_disp = tuple(float(min(cfg.elastic_max_displacement_mm, 0.45 * g)) for g in grid)
    return tio.Compose(
        [
            RandomNnunetSpatial(cfg),
            tio.RandomElasticDeformation(
                num_control_points=cfg.elastic_control_points,
                max_displacement=max_disp,
                image_interpolation="linear",
                label_interpolation="nearest",
                p=cfg.p_elastic,
            ),
            tio.RandomNoise(mean=0.0, std=(0.0, cfg.noise_std_max), p=cfg.p_noise),
            tio.RandomBlur(std=(b0 * mean_spacing, b1 * mean_spacing), p=cfg.p_blur),
            RandomNnunetIntensity(cfg, channels),
            tio.RandomFlip(axes=(0, 1, 2), flip_probability=cfg.p_mirror),
        ]
    )


_BOOKKEEPING = {"include", "exclude", "copy", "check_shape", "label_keys", "parse_input"}


def _jsonable(v: Any) -> Any:
    """Parameters for the manifest; arrays over 27 values (B-spline control points) summarised."""
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items() if k not in _BOOKKEEPING}
    if isinstance(v, (np.ndarray, torch.Tensor, list, tuple)) and not isinstance(v, str):
        arr = np.asarray(v.tolist() if isinstance(v, torch.Tensor) else v, dtype=object)
        if arr.size > 27:
            num = np.asarray(arr, dtype=float)
            return {"shape": list(num.shape), "max_abs": float(np.abs(num).max())}
        return [_jsonable(x) for x in v]
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, (int, float, str, bool)) or v is None:
        return v
    return str(v)


def augment_case(
    image: Volume,
    mask: Volume,
    seed: int,
    cfg: ClassicAugmentConfig | None = None,
) -> tuple[Volume, Volume, list[dict[str, Any]]]:
    """One classically augmented copy of a case.

    Args:
        image: (C, D, H, W) float32 image.
        mask: (1, D, H, W) integer label map on the same grid.
        seed: the copy's seed (same seed -> bit-identical copy; the global RNG is left as found).
        cfg: probabilities and ranges (default: nnU-Net's, :class:`ClassicAugmentConfig`).

    Returns:
        (image (C, D, H, W) float32 in the case's intensity scale, mask (1, D, H, W) with the
        input's dtype, the applied deterministic transforms as ``[{"name", "params"}]``), both
        on the input's grid (same shape and affine).
    """
    cfg = cfg or ClassicAugmentConfig()
    why = grid_mismatch(image.spatial_shape, image.affine, mask.spatial_shape, mask.affine)
    if why:
        raise ValueError(f"image and mask grids differ ({why})")
    x = np.asarray(image.data, dtype=np.float32)
    mu = x.reshape(x.shape[0], -1).mean(1)[:, None, None, None]
    sd = x.reshape(x.shape[0], -1).std(1)[:, None, None, None]
    sd = np.where(sd > 0, sd, 1.0).astype(np.float32)
    z = torch.from_numpy((x - mu) / sd)
    lab = torch.from_numpy(np.asarray(mask.data).astype(np.int64))
    subject = tio.Subject(
        image=tio.ScalarImage(tensor=z, affine=image.affine),
        label=tio.LabelMap(tensor=lab, affine=image.affine),
    )
    transform = classic_transform(cfg, image.spacing, image.spatial_shape, int(x.shape[0]))
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(int(seed))
        out = transform(subject)
    zi = out["image"].data.numpy().astype(np.float32)
    img = (zi * sd + mu).astype(np.float32)
    labels = out["label"].data.numpy().astype(np.asarray(mask.data).dtype)
    applied = [
        {"name": name, "params": _jsonable(params)}
        for name, params in out.applied_transforms
        if name not in ("Compose",)
    ]
    return Volume(img, image.affine), Volume(labels, image.affine), applied
