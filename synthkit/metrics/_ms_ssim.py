"""3D multi-scale SSIM (Wang, Simoncelli & Bovik, "Multiscale structural similarity for image
quality assessment", Asilomar 2003) with MONAI-compatible maths, and within-set diversity.

Per scale ``j`` the images are compared with a Gaussian window (valid convolution, no padding):
``cs_j = mean((2 s_xy + C2) / (s_x + s_y + C2))`` and at the last scale
``ssim = mean(l * cs)``; between scales both images are 2x average-pooled. The score is
``prod_j relu(cs_j)^w_j`` for ``j < L-1`` times ``relu(ssim_{L-1})^w_{L-1}``, with
``C1 = (0.01 R)^2``, ``C2 = (0.03 R)^2``, ``R = data_range``. Identical to
``monai.metrics.MultiScaleSSIMMetric`` at the same settings.

MONAI's defaults (kernel 11, sigma 1.5, five scales with weights
``(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)``) reject volumes under 176 voxels a side. When the
caller does not fix them, :func:`resolve_settings` adapts them to the volume: it keeps as many
scales as possible with a kernel of at least 7 (kernel 11, 9 or 7, largest that fits), uses the
first ``L`` weights renormalised to sum 1, and meets both MONAI's check
(``size // (L-1)^2 > kernel - 1``) and the valid-convolution requirement at the coarsest scale
(``size // 2^(L-1) >= kernel``). E.g. 176^3+: 5 scales/k11; 128^3: 5/k7; 64^3: 4/k7;
32^3: 3/k7; 16^3: 2/k7. The settings used are returned with every result
(:meth:`MSSSIMSettings.to_dict`) and must be reported next to any MS-SSIM number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["MONAI_WEIGHTS", "MSSSIMSettings", "diversity", "ms_ssim", "resolve_settings"]

MONAI_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


@dataclass(frozen=True)
class MSSSIMSettings:
    """Everything that determines an MS-SSIM value (report it with the number)."""

    kernel_size: int
    sigma: float
    weights: tuple[float, ...]
    data_range: float
    k1: float = 0.01
    k2: float = 0.03
    kernel_type: str = "gaussian"

    @property
    def scales(self) -> int:
        return len(self.weights)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["weights"] = list(self.weights)
        d["scales"] = self.scales
        return d


def _fits(size: int, scales: int, kernel: int) -> bool:
    monai_ok = size // max(1, scales - 1) ** 2 > kernel - 1
    return monai_ok and size // 2 ** (scales - 1) >= kernel


def resolve_settings(
    spatial_shape: Sequence[int],
    data_range: float = 1.0,
    kernel_size: int | None = None,
    sigma: float = 1.5,
    weights: Sequence[float] | None = None,
) -> MSSSIMSettings:
    """MS-SSIM settings for volumes of ``spatial_shape`` (D, H, W); see the module docstring.

    Explicit ``kernel_size``/``weights`` are used as given (ValueError if they do not fit).
    """
    size = min(int(s) for s in spatial_shape)
    if kernel_size is not None and weights is not None:
        chosen = (tuple(float(w) for w in weights), int(kernel_size))
    else:
        chosen = None
        base = tuple(float(w) for w in weights) if weights is not None else MONAI_WEIGHTS
        max_scales = len(base) if weights is not None else len(MONAI_WEIGHTS)
        kernels = [int(kernel_size)] if kernel_size is not None else [11, 9, 7, 5, 3]
        for min_kernel in (7, 3):
            for n in range(max_scales, 0, -1):
                if weights is not None and n != max_scales:
                    break
                ks = [k for k in kernels if k >= min_kernel and _fits(size, n, k)]
                if ks:
                    w = base[:n]
                    total = sum(w)
                    w = w if n == len(base) else tuple(x / total for x in w)
                    chosen = (w, ks[0])
                    break
            if chosen:
                break
        if chosen is None:
            raise ValueError(f"volume of shape {tuple(spatial_shape)} is too small for MS-SSIM")
    w, k = chosen
    if k < 1 or k % 2 == 0:
        raise ValueError(f"kernel_size must be a positive odd integer, got {k}")
    if not _fits(size, len(w), k):
        raise ValueError(
            f"MS-SSIM with {len(w)} scales and kernel {k} needs volumes larger than "
            f"{max((k - 1) * max(1, len(w) - 1) ** 2, k * 2 ** (len(w) - 1) - 1)} voxels a side, "
            f"got {tuple(spatial_shape)}"
        )
    if data_range <= 0:
        raise ValueError(f"data_range must be positive, got {data_range}")
    return MSSSIMSettings(kernel_size=k, sigma=float(sigma), weights=tuple(w), data_range=float(data_range))


def _gauss1d(k: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    x = torch.arange(k, dtype=torch.float64) - (k - 1) / 2.0
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def _blur(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable valid Gaussian filtering of (B, 1, D, H, W) along the three axes, as a sum of
    shifted slices (much faster on the CPU than a 1-channel ``conv3d`` with a thin kernel)."""
    k = g.numel()
    for axis in (2, 3, 4):
        n = x.shape[axis] - k + 1
        taps = [float(v) for v in g]
        acc = x.narrow(axis, 0, n) * taps[0]
        for t in range(1, k):
            acc.add_(x.narrow(axis, t, n), alpha=taps[t])
        x = acc
    return x


def _ssim_cs(x: torch.Tensor, y: torch.Tensor, g: torch.Tensor, c1: float, c2: float, last: bool):
    """Mean SSIM map (``last``) or mean contrast-structure map per item, ``(B,)``."""
    n = x.shape[0]
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=0)  # (5B, 1, D, H, W)
    mu_x, mu_y, e_xx, e_yy, e_xy = _blur(stacked, g).split(n, dim=0)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov = e_xy - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    if last:
        cs = cs * (2 * mu_x * mu_y + c1) / (mu_x * mu_x + mu_y * mu_y + c1)
    return cs.reshape(n, -1).mean(dim=1)


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    data_range: float = 1.0,
    kernel_size: int | None = None,
    sigma: float = 1.5,
    weights: Sequence[float] | None = None,
    settings: MSSSIMSettings | None = None,
) -> torch.Tensor:
    """MS-SSIM per item for ``x, y`` of shape ``(N, C, D, H, W)`` (or ``(C, D, H, W)``).

    Returns ``(N,)`` float32 values (mean over channels, as MONAI). ``kernel_size``/``weights``
    ``None`` adapt to the volume size (:func:`resolve_settings`); pass ``settings`` to fix all.
    """
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim == 4:
        x, y = x[None], y[None]
    if x.ndim != 5:
        raise ValueError(f"expected (N, C, D, H, W) volumes, got shape {tuple(x.shape)}")
    s = settings or resolve_settings(x.shape[2:], data_range, kernel_size, sigma, weights)
    n, c = x.shape[:2]
    xb = x.reshape(n * c, 1, *x.shape[2:]).float()
    yb = y.reshape(n * c, 1, *y.shape[2:]).float()
    g = _gauss1d(s.kernel_size, s.sigma, xb.dtype, xb.device)
    c1, c2 = (s.k1 * s.data_range) ** 2, (s.k2 * s.data_range) ** 2
    out = torch.ones(n, dtype=torch.float32, device=xb.device)
    for j, w in enumerate(s.weights):
        last = j == s.scales - 1
        term = _ssim_cs(xb, yb, g, c1, c2, last)
        out = out * torch.relu(term) ** w
        if not last:
            xb, yb = F.avg_pool3d(xb, 2), F.avg_pool3d(yb, 2)
    return out


def diversity(
    volumes: Sequence[torch.Tensor] | torch.Tensor,
    n_pairs: int = 100,
    seed: int = 0,
    settings: MSSSIMSettings | None = None,
    data_range: float = 1.0,
    batch: int = 8,
) -> tuple[np.ndarray, MSSSIMSettings]:
    """MS-SSIM of random distinct pairs within one set (lower = more diverse).

    ``volumes``: N items ``(C, D, H, W)`` (N >= 2). Pairs ``(i, j), i < j`` are drawn without
    replacement from all ``N (N-1) / 2`` pairs with ``numpy.random.default_rng(seed)`` (all pairs
    when there are at most ``n_pairs``), scored ``batch`` pairs at a time. Returns the per-pair values ``(P,)`` and the settings.
    """
    n = len(volumes)
    if n < 2:
        raise ValueError(f"diversity needs at least 2 volumes, got {n}")
    total = n * (n - 1) // 2
    rng = np.random.default_rng(seed)
    picks = np.arange(total) if total <= n_pairs else np.sort(rng.choice(total, n_pairs, replace=False))
    iu = np.triu_indices(n, k=1)
    s = settings or resolve_settings(volumes[0].shape[1:], data_range)
    values = np.empty(len(picks), dtype=np.float64)
    for start in range(0, len(picks), batch):
        chunk = picks[start : start + batch]
        x = torch.stack([torch.as_tensor(volumes[int(iu[0][p])]) for p in chunk])
        y = torch.stack([torch.as_tensor(volumes[int(iu[1][p])]) for p in chunk])
        values[start : start + len(chunk)] = ms_ssim(x, y, settings=s).double().numpy()
    return values, s

