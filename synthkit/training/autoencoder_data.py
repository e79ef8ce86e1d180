"""Data and measurements for autoencoder training: seeded random crops that meet the head, the
latent scale factor, and PSNR / SSIM inside the head.

Everything random takes an explicit ``torch.Generator``, so a run's crops are a pure function of
the generator state (which a checkpoint stores): resuming draws the same crops.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from synthkit.errors import UsageError


def head_boxes(labels: torch.Tensor) -> torch.Tensor:
    """``labels`` (N, D, H, W) -> (N, 3, 2) int64: per case the inclusive [lo, hi] voxel range of
    ``labels > 0`` on each axis (the whole volume for a case without foreground)."""
    out = torch.empty((labels.shape[0], 3, 2), dtype=torch.int64)
    for i in range(labels.shape[0]):
        fg = labels[i] > 0
        for a in range(3):
            other = tuple(d for d in range(3) if d != a)
            hit = fg.any(dim=other).nonzero().flatten() if fg.any() else torch.empty(0, dtype=torch.int64)
            n = labels.shape[1 + a]
            out[i, a] = torch.tensor([int(hit[0]), int(hit[-1])] if len(hit) else [0, n - 1])
    return out


def check_crop(crop: int, shape: tuple[int, ...], factor: int) -> None:
    """UsageError unless ``crop`` is a positive multiple of ``factor`` no larger than ``shape``."""
    if crop < factor or crop % factor:
        raise UsageError(f"--crop {crop} must be a positive multiple of {factor} (the autoencoder's downsampling)")
    if any(crop > int(s) for s in shape):
        raise UsageError(f"--crop {crop} is larger than --shape {' '.join(map(str, shape))}")


def sample_crops(images: torch.Tensor, boxes: torch.Tensor, crop: int, batch: int,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch`` random ``crop^3`` crops of ``images`` (N, C, D, H, W): a case drawn uniformly,
    then a crop centre drawn uniformly inside that case's head box (``boxes`` from
    :func:`head_boxes`), the crop shifted to lie inside the volume. Returns ``(crops (B, C, c, c, c),
    origins (B, 4) int64 = case, d0, h0, w0)``; all draws come from ``generator``."""
    n = images.shape[0]
    dims = images.shape[2:]
    cases = torch.randint(n, (batch,), generator=generator)
    u = torch.rand((batch, 3), generator=generator, dtype=torch.float64)
    out = torch.empty((batch, images.shape[1], crop, crop, crop), dtype=images.dtype)
    origins = torch.empty((batch, 4), dtype=torch.int64)
    for b in range(batch):
        i = int(cases[b])
        origins[b, 0] = i
        sl = []
        for a in range(3):
            lo, hi = (int(v) for v in boxes[i, a])
            centre = lo + math.floor(float(u[b, a]) * (hi - lo + 1))
            start = min(max(centre - crop // 2, 0), int(dims[a]) - crop)
            origins[b, 1 + a] = start
            sl.append(slice(start, start + crop))
        out[b] = images[i, :, sl[0], sl[1], sl[2]]
    return out, origins


@torch.no_grad()
def measure_scale_factor(model: torch.nn.Module, images: torch.Tensor, *, device: str = "cpu",
                         max_cases: int = 4, autocast=None) -> float:
    """LDM's latent scale (Rombach et al. 2022, Sec. 4.3.2): ``1 / std`` of the posterior means of
    the first ``max_cases`` whole training volumes ``images`` (N, C, D, H, W), so that scaled
    latents have unit variance. ``autocast``: a context-manager factory (e.g. bf16) or None."""
    import contextlib

    was = model.training
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64)  # count, sum, sum of squares
    try:
        for i in range(min(max_cases, images.shape[0])):
            with autocast() if autocast is not None else contextlib.nullcontext():
                mean, _ = model.encode(images[i : i + 1].to(device))
            m = mean.double().cpu()
            sums += torch.tensor([m.numel(), m.sum().item(), m.pow(2).sum().item()], dtype=torch.float64)
    finally:
        model.train(was)
    count, s, s2 = sums.tolist()
    var = max(s2 / count - (s / count) ** 2, 0.0)
    return 1.0 / math.sqrt(var) if var > 0 else 1.0


# ----------------------------------------------------------------------------- metrics


def masked_psnr(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, data_range: float) -> float:
    """PSNR in dB of ``y`` against the reference ``x`` over voxels where ``mask`` is True:
    ``10 log10(data_range^2 / MSE)`` (``inf`` for identical volumes). Shapes (..., D, H, W) alike;
    ``mask`` broadcasts over leading channel dims."""
    m = mask.expand_as(x)
    if not bool(m.any()):
        raise ValueError("the mask is empty")
    d = (x.double() - y.double())[m]
    mse = float(d.pow(2).mean())
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def _gauss(sigma: float, radius: int) -> torch.Tensor:
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-(t**2) / (2 * sigma**2))
    return g / g.sum()


def _blur3(v: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of (N, 1, D, H, W), replicate padding (keeps the shape)."""
    r = (len(g) - 1) // 2
    for axis in range(3):
        shape = [1, 1, 1, 1, 1]
        shape[2 + axis] = len(g)
        pad = [0] * 6
        pad[2 * (2 - axis)] = pad[2 * (2 - axis) + 1] = r
        v = F.conv3d(F.pad(v, pad, mode="replicate"), g.view(shape).to(v.dtype))
    return v


def masked_ssim(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, data_range: float,
                sigma: float = 1.5) -> float:
    """Mean SSIM (Wang et al. 2004: Gaussian window, sigma 1.5, K1 0.01, K2 0.03) of ``y`` against
    ``x`` over the voxels where ``mask`` is True; ``x``, ``y``, ``mask``: (D, H, W). Local
    statistics use the whole volume; only the averaging is restricted to the mask."""
    if x.shape != y.shape or x.shape != mask.shape or x.ndim != 3:
        raise ValueError(f"x, y and mask must be (D, H, W) alike, got {tuple(x.shape)}, {tuple(y.shape)}, "
                         f"{tuple(mask.shape)}")
    if not bool(mask.any()):
        raise ValueError("the mask is empty")
    g = _gauss(sigma, math.ceil(3.5 * sigma))
    a, b = x.double()[None, None], y.double()[None, None]
    mu_a, mu_b = _blur3(a, g), _blur3(b, g)
    var_a = _blur3(a * a, g) - mu_a**2
    var_b = _blur3(b * b, g) - mu_b**2
    cov = _blur3(a * b, g) - mu_a * mu_b
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s[0, 0][mask].mean())
