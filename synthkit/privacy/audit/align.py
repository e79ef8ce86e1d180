"""Group-wise affine alignment onto a cohort's mean anatomy, and what is left after it.

A subject is more than the anatomy everyone shares. To compare *subjects*, every prepared
volume (see :func:`synthkit.privacy.audit.memorization.prepare`: comparison grid, standardised in
the head, zero outside) is aligned by a 12-parameter affine transform onto the training
cohort's **template**, the mean of the aligned training volumes, built the way group-wise
atlases are (Joshi et al. 2004; here affine only): start from the plain mean, align every
volume to it, average again, three rounds. What remains specific to a subject is

* the **residual**: aligned volume (intensities quantile matched to the template's) minus
  template, band-passed (a difference of Gaussians) so that noise and smooth bias fields, which
  a copy need not share, weigh less than anatomy;
* the **head shape**: the aligned head mask (the non-zero voxels), compared by Dice.

Alignment minimises the mean squared difference to the template with Adam over the affine
parameters of :func:`torch.nn.functional.affine_grid` (normalised coordinates), initialised
from the centres of mass, first on a 2x downsampled grid and then at full resolution. All
volumes are aligned in one batch; at 32^3 a cohort of 50 takes a few seconds on a CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROUNDS = 3
ITERATIONS = 40
#: share of the iterations spent on the 2x downsampled grid (8x cheaper per iteration)
COARSE_FRACTION = 0.75


@dataclass(frozen=True)
class Template:
    """The training cohort's mean anatomy on the comparison grid.

    ``mean``: (C, D, H, W) float32, the mean of the aligned training volumes; ``head``:
    (D, H, W) float32 in [0, 1], the fraction of aligned training heads covering each voxel.
    """

    mean: np.ndarray
    head: np.ndarray


def _torch():
    import torch
    import torch.nn.functional as F

    return torch, F


def _normalised_centroid(weights):
    """Centres of mass (N, 3) of (N, D, H, W) weights in affine_grid's (x=W, y=H, z=D) order."""
    torch, _ = _torch()
    d, h, w = weights.shape[1:]
    axes = [torch.linspace(-1 + 1 / s, 1 - 1 / s, s, dtype=weights.dtype) for s in (d, h, w)]
    total = weights.sum(dim=(1, 2, 3)).clamp_min(1e-12)
    cz = (weights.sum(dim=(2, 3)) * axes[0]).sum(1) / total
    cy = (weights.sum(dim=(1, 3)) * axes[1]).sum(1) / total
    cx = (weights.sum(dim=(1, 2)) * axes[2]).sum(1) / total
    return torch.stack([cx, cy, cz], dim=1)


def warp(volumes: np.ndarray, theta: np.ndarray, *, nearest: bool = False) -> np.ndarray:
    """Resample (N, C, D, H, W) volumes through affine_grid parameters ``theta`` (N, 3, 4):
    output voxel ``x`` takes the input at ``theta @ [x, 1]`` (normalised coordinates, zero
    outside). ``nearest`` for masks."""
    torch, F = _torch()
    x = torch.as_tensor(np.ascontiguousarray(volumes, dtype=np.float32))
    th = torch.as_tensor(np.asarray(theta, dtype=np.float32))
    grid = F.affine_grid(th, list(x.shape), align_corners=False)
    out = F.grid_sample(x, grid, mode="nearest" if nearest else "bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.numpy()


def register(moving: np.ndarray, fixed: np.ndarray, *, iterations: int = ITERATIONS, lr: float = 0.01,
             theta0: np.ndarray | None = None) -> np.ndarray:
    """Affine parameters (N, 3, 4) aligning each of ``moving`` (N, C, D, H, W) onto ``fixed``
    (C, D, H, W), or onto its own ``fixed[i]`` when ``fixed`` is (N, C, D, H, W), by least
    squares (see the module text). ``theta0`` (N, 3, 4): a starting point (default: identity
    plus the difference of the centres of mass)."""
    torch, F = _torch()
    mov = torch.as_tensor(np.ascontiguousarray(moving, dtype=np.float32))
    fix = torch.as_tensor(np.ascontiguousarray(fixed, dtype=np.float32))
    fix = fix if fix.ndim == 5 else fix[None].expand_as(mov)
    n = mov.shape[0]
    if theta0 is None:
        base = torch.eye(3, 4).repeat(n, 1, 1)
        shift = _normalised_centroid(mov.abs().sum(1)) - _normalised_centroid(fix.abs().sum(1))
        base[:, :, 3] = shift
    else:
        base = torch.as_tensor(np.asarray(theta0, dtype=np.float32)).clone()
    delta = torch.zeros_like(base, requires_grad=True)
    opt = torch.optim.Adam([delta], lr=lr)
    scale = torch.tensor([1.0, 1.0, 1.0, 0.5])  # translations move further per unit than the linear part
    coarse = round(iterations * COARSE_FRACTION)
    levels = [(2, coarse), (1, iterations - coarse)]
    for factor, steps in levels:
        m = F.avg_pool3d(mov, factor) if factor > 1 else mov
        f = F.avg_pool3d(fix, factor) if factor > 1 else fix
        for _ in range(steps):
            opt.zero_grad()
            th = base + delta * scale
            grid = F.affine_grid(th, list(m.shape), align_corners=False)
            out = F.grid_sample(m, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            loss = ((out - f) ** 2).mean(dim=(1, 2, 3, 4)).sum()
            loss.backward()
            opt.step()
    return (base + delta.detach() * scale).numpy().astype(np.float64)


def head_of(volumes: np.ndarray) -> np.ndarray:
    """Head masks (N, D, H, W) float32 of prepared volumes (N, C, D, H, W): the non-zero voxels."""
    return np.any(np.asarray(volumes) != 0, axis=1).astype(np.float32)


def build_template(volumes: np.ndarray, *, rounds: int = ROUNDS, iterations: int = ITERATIONS
                   ) -> tuple[Template, np.ndarray]:
    """The template of prepared training volumes (N, C, D, H, W) and each one's alignment
    ``theta`` (N, 3, 4) onto it."""
    v = np.asarray(volumes, dtype=np.float32)
    if v.ndim != 5 or v.shape[0] < 2:
        raise ValueError(f"a template needs at least 2 volumes (N, C, D, H, W), got shape {v.shape}")
    mean = v.mean(axis=0)
    theta = None
    for _ in range(max(1, rounds) - 1):
        theta = register(v, mean, iterations=iterations, theta0=theta)
        mean = warp(v, theta).mean(axis=0)
    theta = register(v, mean, iterations=iterations, theta0=theta)
    return template_of(v, theta), theta


def template_of(volumes: np.ndarray, theta: np.ndarray) -> Template:
    """The template of prepared volumes (N, C, D, H, W) under their final alignments ``theta``
    (N, 3, 4): what :func:`build_template` returns with that ``theta``, array for array (so a
    template can be rebuilt from stored alignments: :mod:`synthkit.privacy.audit.reference_seed`)."""
    v = np.asarray(volumes, dtype=np.float32)
    mean = warp(v, theta).mean(axis=0)
    head = warp(head_of(v)[:, None], theta)[:, 0].mean(axis=0)
    return Template(mean.astype(np.float32), np.clip(head, 0, 1).astype(np.float32))


@dataclass(frozen=True)
class Identity:
    """What is specific to each volume after alignment: ``residual`` (N, C, D, H, W) float32
    (smoothed aligned volume minus template) and ``head`` (N, D, H, W) bool (aligned head)."""

    residual: np.ndarray
    head: np.ndarray


def identity(volumes: np.ndarray, template: Template, *, sigma: float = 1.0, highpass: float = 3.0,
             match: bool = True, iterations: int = ITERATIONS, theta: np.ndarray | None = None) -> Identity:
    """Align prepared volumes (N, C, D, H, W) onto ``template`` (or use the given ``theta``)
    and return their :class:`Identity`. Before the difference, head intensities are quantile
    matched to the template's (``match``, :func:`match_histogram`); the residual is then
    band-passed: Gaussian ``sigma`` minus Gaussian ``highpass`` (voxels; 0 = low-pass only), so
    that noise and smooth bias fields, which a copy need not share, weigh less than anatomy."""
    v = np.asarray(volumes, dtype=np.float32)
    if len(v) == 0:
        return Identity(np.zeros((0, *template.mean.shape), np.float32), np.zeros((0, *template.head.shape), bool))
    if theta is None:
        theta = register(v, template.mean, iterations=iterations)
    aligned = warp(v, theta)
    head = warp(head_of(v)[:, None], theta)[:, 0] > 0.5
    if match:
        aligned = np.stack([match_histogram(a, h, template) for a, h in zip(aligned, head)])
    res = aligned - template.mean[None]
    if sigma > 0:
        res = np.stack([[_band(c, sigma, highpass) for c in r] for r in res])
    return Identity(res.astype(np.float32), head)


def _band(x: np.ndarray, sigma: float, highpass: float) -> np.ndarray:
    from scipy import ndimage

    lo = ndimage.gaussian_filter(x, sigma, mode="constant")
    if highpass > 0:
        lo = lo - ndimage.gaussian_filter(x, highpass, mode="constant")
    return lo


def match_histogram(volume: np.ndarray, head: np.ndarray, template: Template) -> np.ndarray:
    """``volume`` (C, D, H, W) with its head voxels' intensities replaced, rank for rank, by the
    template's head intensities (quantile matching), so that a gamma or contrast change does
    not look like a different subject. Voxels outside ``head`` (D, H, W) are left as they are."""
    out = volume.copy()
    ref_head = template.head > 0.5
    if not head.any() or not ref_head.any():
        return out
    for c in range(volume.shape[0]):
        ref = np.sort(template.mean[c][ref_head])
        x = volume[c][head]
        ranks = (np.argsort(np.argsort(x, kind="stable"), kind="stable") + 0.5) / x.size
        out[c][head] = np.interp(ranks, (np.arange(ref.size) + 0.5) / ref.size, ref)
    return out


def dice_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dice overlap (Q, R) of boolean masks ``a`` (Q, D, H, W) and ``b`` (R, D, H, W)."""
    qa = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    rb = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    inter = qa @ rb.T
    sizes = qa.sum(1)[:, None] + rb.sum(1)[None, :]
    return np.where(sizes > 0, 2 * inter / np.maximum(sizes, 1e-12), 0.0)
