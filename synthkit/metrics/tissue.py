"""Tissue realism: does the tissue away from the labels look like tissue?

Everything is measured inside the *tissue region* of each case (:func:`tissue_region`): the
head or brain (the mask's enclosing label such as ``head``, or the intensity foreground when
the mask labels only lesions), without the labels that sit inside it (the tumour and a
``margin`` of voxels around it) and without its outer voxel layer.

Per case and channel (:func:`tissue_profile`):

* **intensities**: a seeded sample of the region's voxels, z-scored with the region's mean and
  sd (so scanner scale does not matter, only the shape of the histogram);
* **CJV** (coefficient of joint variation, as MRIQC computes it for white and grey matter):
  the region's intensities split into three classes by 1D k-means, then
  ``CJV = (sd_a + sd_b) / |mean_a - mean_b|`` of the two brightest (:func:`cjv`); lower means
  the two tissues are better separated; a blurred or blotchy brain raises it;
* **power spectrum**: the radially averaged 3D power spectrum of up to ``n_patches`` cubic
  patches of ``patch`` voxels lying wholly in the region (at least 75 % in it where none fits,
  the rest set to the patch's tissue mean; mean removed, 3D Hann window), averaged; shells of
  width ``1/patch`` cycles per voxel up to the Nyquist frequency 0.5.

Set level (:func:`tissue_metrics`), each a distance to the real set, lower is better:

* ``intensity_w1``: Wasserstein-1 distance of the pooled z-scored intensities;
* ``spectrum``: log-spectral distance ``sqrt(mean_k (10 log10(S_a(k) / S_b(k)))^2)`` in dB between
  the mean normalised spectra; with the share of power above half the Nyquist frequency
  (``hf_share``: blur removes it, blotches move power to middle frequencies) and the
  spectral slope (log power vs log frequency) reported beside it;
* ``cjv``: ``|log(median CJV_set / median CJV_real)|``, with both medians reported.

**Equal sample sizes.** Distances between finite samples shrink as the samples grow, so each
repeat splits the real set into random halves ``A`` and ``B`` and scores ``A`` against ``B``
(the real-vs-real reference: what a perfect generator gets at this size) and ``A`` against as
many synthetic volumes (those generated from ``B``'s masks where pairs exist, else a random
subset). Values are means over ``repeats`` splits and intervals the 2.5/97.5 percentiles over
them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = [
    "HF_CUTOFF",
    "TissueProfile",
    "cjv",
    "hf_share",
    "log_spectral_distance",
    "mean_spectrum",
    "radial_power",
    "spectral_slope",
    "three_class_cjv",
    "tissue_metrics",
    "tissue_profile",
    "tissue_region",
]

HF_CUTOFF = 0.25  # cycles/voxel: half the Nyquist frequency
SAMPLE_VOXELS = 20_000
_CROSS = ndimage.generate_binary_structure(3, 1)


@dataclass
class TissueProfile:
    """One case's tissue statistics, per channel: ``samples[c]`` z-scored intensities,
    ``cjv[c]``, ``power[c]`` summed power per frequency shell and ``modes`` modes per shell."""

    samples: list[np.ndarray]
    cjv: list[float]
    power: list[np.ndarray]
    modes: np.ndarray | None


def tissue_region(image: np.ndarray, mask: np.ndarray | None, *, margin: int = 3) -> np.ndarray:
    """Boolean ``(D, H, W)`` tissue region of one channel (module docstring): the enclosing
    label (:func:`synthkit.metrics.label_fidelity.enclosing_label`) where the mask has one, else
    the intensity foreground; without the other labels and ``margin`` voxels around them, and
    without the outer voxel layer."""
    from synthkit.metrics.label_fidelity import enclosing_label
    from synthkit.preprocess.intensity import foreground

    outer = enclosing_label(mask) if mask is not None else None
    region = mask == outer if outer is not None else ndimage.binary_fill_holes(foreground(image))
    if mask is not None:
        lesions = (mask > 0) & (mask != outer)
        if lesions.any():
            region &= ~ndimage.binary_dilation(lesions, structure=_CROSS, iterations=margin)
    return ndimage.binary_erosion(region, structure=_CROSS)


def cjv(a: np.ndarray, b: np.ndarray) -> float:
    """Coefficient of joint variation of two tissue classes: ``(sd_a + sd_b) / |mean_a - mean_b|``."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    gap = abs(a.mean() - b.mean())
    return float((a.std() + b.std()) / gap) if gap > 0 else float("inf")


def _kmeans_1d(values: np.ndarray, k: int = 3, iters: int = 30) -> np.ndarray:
    """Class index per value (0 = darkest) from 1D k-means started at the quantiles."""
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iters):
        cls = np.abs(values[:, None] - centres[None]).argmin(1)
        new = np.array([values[cls == j].mean() if np.any(cls == j) else centres[j] for j in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    order = np.argsort(centres)
    return np.argsort(order)[np.abs(values[:, None] - centres[None]).argmin(1)]


def three_class_cjv(values: np.ndarray) -> float:
    """CJV of the two brightest of three k-means intensity classes (NaN if a class is empty)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    if v.size < 30:
        return float("nan")
    cls = _kmeans_1d(v)
    a, b = v[cls == 2], v[cls == 1]
    return cjv(a, b) if a.size > 1 and b.size > 1 else float("nan")


def _shell_index(patch: int) -> np.ndarray:
    f = np.fft.fftfreq(patch)
    k = np.sqrt(f[:, None, None] ** 2 + f[None, :, None] ** 2 + f[None, None, :] ** 2)
    return np.rint(k * patch).astype(int)  # shell 1..patch//2 are kept (0 = the mean)


def radial_power(patch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Summed power and mode count per frequency shell ``1..P/2`` of one cubic patch ``(P, P, P)``
    (mean removed, 3D Hann window). Shell ``s`` holds frequencies ``|k| ~ s / P`` cycles/voxel."""
    p = patch.shape[0]
    if patch.shape != (p, p, p) or p < 4:
        raise ValueError(f"expected a cubic patch of at least 4^3, got {patch.shape}")
    w = np.hanning(p + 2)[1:-1]
    win = w[:, None, None] * w[None, :, None] * w[None, None, :]
    x = (patch - patch.mean()) * win
    power = np.abs(np.fft.fftn(x)) ** 2
    shell = _shell_index(p)
    keep = (shell >= 1) & (shell <= p // 2)
    sums = np.bincount(shell[keep], weights=power[keep], minlength=p // 2 + 1)[1:]
    modes = np.bincount(shell[keep], minlength=p // 2 + 1)[1:]
    return sums, modes


def _patch_corners(region: np.ndarray, patch: int, n: int, rng: np.random.Generator) -> list[tuple[int, ...]]:
    """Corners of up to ``n`` random cubes wholly inside ``region`` (at least 75 % inside where
    no cube fits wholly: small heads, tiny test volumes)."""
    frac = ndimage.uniform_filter(region.astype(np.float32), size=patch, mode="constant")
    half = patch // 2
    frac[:half], frac[frac.shape[0] - (patch - half) + 1 :] = 0, 0  # cubes stay inside the volume
    frac[:, :half], frac[:, frac.shape[1] - (patch - half) + 1 :] = 0, 0
    frac[:, :, :half], frac[:, :, frac.shape[2] - (patch - half) + 1 :] = 0, 0
    centres = np.argwhere(frac > 1 - 1e-4)
    if centres.size == 0:
        centres = np.argwhere(frac >= 0.75)
    if centres.size == 0:
        return []
    pick = centres[rng.choice(len(centres), size=min(n, len(centres)), replace=False)]
    return [tuple(int(c) - half for c in centre) for centre in pick]


def tissue_profile(volume: np.ndarray, mask: np.ndarray | None, *, patch: int = 16, n_patches: int = 16,
                   seed: int = 0) -> TissueProfile:
    """The statistics of one case ``(C, D, H, W)`` (module docstring); deterministic per ``seed``."""
    rng = np.random.default_rng(seed)
    samples, cjvs, powers, modes = [], [], [], None
    for channel in np.asarray(volume, dtype=np.float32):
        region = tissue_region(channel, mask)
        vals = channel[region].astype(np.float64)
        if vals.size < 30:
            samples.append(np.zeros(0, np.float32))
            cjvs.append(float("nan"))
            powers.append(np.zeros(0))
            continue
        z = (vals - vals.mean()) / (vals.std() or 1.0)
        take = rng.choice(z.size, size=min(SAMPLE_VOXELS, z.size), replace=False)
        samples.append(z[take].astype(np.float32))
        cjvs.append(three_class_cjv(z[take]))
        total = np.zeros(patch // 2)
        for corner in _patch_corners(region, patch, n_patches, rng):
            sl = tuple(slice(c, c + patch) for c in corner)
            cube, inside = channel[sl].astype(np.float64), region[sl]
            cube[~inside] = cube[inside].mean()  # voxels outside the tissue add no power of their own
            sums, modes = radial_power(cube)
            total += sums
        powers.append(total)
    return TissueProfile(samples, cjvs, powers, modes)


def spectral_slope(power: np.ndarray, modes: np.ndarray) -> float:
    """Least-squares slope of log mean power against log frequency over the shells."""
    keep = (modes > 0) & (power > 0)
    if keep.sum() < 2:
        return float("nan")
    shells = np.arange(1, len(power) + 1)[keep]
    return float(np.polyfit(np.log(shells), np.log(power[keep] / modes[keep]), 1)[0])


def log_spectral_distance(a: np.ndarray, b: np.ndarray) -> float:
    """dB distance of two mean-power-per-shell spectra, each normalised to sum 1 first."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != b.shape or a.sum() <= 0 or b.sum() <= 0:
        return float("nan")
    a, b = a / a.sum(), b / b.sum()
    ok = (a > 0) & (b > 0)
    return float(np.sqrt(np.mean((10 * np.log10(a[ok] / b[ok])) ** 2))) if ok.any() else float("nan")


def mean_spectrum(profiles: Sequence[TissueProfile], c: int) -> np.ndarray:
    """Mean power per shell of channel ``c`` over ``profiles`` (each case normalised to sum 1)."""
    rows = [p.power[c] / p.modes for p in profiles if p.modes is not None and p.power[c].sum() > 0]
    rows = [r / r.sum() for r in rows]
    return np.mean(rows, axis=0) if rows else np.zeros(0)


def hf_share(p: TissueProfile, c: int) -> float:
    """Share of channel ``c``'s patch power above :data:`HF_CUTOFF` cycles/voxel."""
    if p.modes is None or p.power[c].sum() <= 0:
        return float("nan")
    patch = 2 * len(p.power[c])
    hf = np.arange(1, len(p.power[c]) + 1) / patch > HF_CUTOFF
    return float(p.power[c][hf].sum() / p.power[c].sum())


def _distances(a: Sequence[TissueProfile], b: Sequence[TissueProfile]) -> dict[str, float]:
    """Channel-mean distances of profile set ``b`` to profile set ``a``."""
    from scipy.stats import wasserstein_distance

    out: dict[str, list[float]] = {"intensity_w1": [], "spectrum": [], "cjv": []}
    for c in range(len(a[0].samples)):
        sa = np.concatenate([p.samples[c] for p in a])
        sb = np.concatenate([p.samples[c] for p in b])
        out["intensity_w1"].append(wasserstein_distance(sa, sb) if sa.size and sb.size else float("nan"))
        out["spectrum"].append(log_spectral_distance(mean_spectrum(a, c), mean_spectrum(b, c)))
        ca, cb = np.nanmedian([p.cjv[c] for p in a]), np.nanmedian([p.cjv[c] for p in b])
        out["cjv"].append(abs(float(np.log(cb / ca))) if ca > 0 and cb > 0 else float("nan"))
    return {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan") for k, v in out.items()}


def _over_splits(values: list[float], method: str) -> dict:
    from synthkit.metrics.bootstrap import Interval

    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return Interval(float("nan"), float("nan"), float("nan"), (float("nan"),) * 2, 0, method).to_dict()
    lo, hi = np.percentile(v, [2.5, 97.5])
    std = float(v.std(ddof=1)) if v.size > 1 else 0.0
    return Interval(float(v.mean()), float(v.mean()), std, (float(lo), float(hi)), int(v.size), method).to_dict()


def _descriptors(profiles: Sequence[TissueProfile], seed: int) -> dict[str, dict | None]:
    """Median CJV, high-frequency share and spectral slope of a set (channel 0 for the slope)."""
    from synthkit.metrics.bootstrap import median_interval

    def med(vals: list[float]) -> dict | None:
        v = np.asarray(vals, dtype=np.float64)
        return median_interval(v, seed=seed).to_dict() if np.isfinite(v).any() else None

    nchan = len(profiles[0].samples)
    per_case = lambda f: [float(np.nanmean([f(p, c) for c in range(nchan)])) for p in profiles]
    return {
        "median_cjv": med(per_case(lambda p, c: p.cjv[c])),
        "hf_share": med(per_case(hf_share)),
        "spectral_slope": med([spectral_slope(p.power[0], p.modes) if p.modes is not None else float("nan")
                               for p in profiles]),
    }


def _subset(pairs: Sequence[tuple[int, int]], half: np.ndarray, size: int, n_set: int,
            rng: np.random.Generator) -> list[int]:
    """Synthetic volumes generated from the masks of ``half`` (pairs), else a random subset."""
    wanted = {int(i) for i in half}
    paired = [j for i, j in pairs if i in wanted]
    pool = paired if len(paired) >= max(2, size // 2) else list(range(n_set))
    pick = rng.permutation(len(pool))[: min(size, len(pool))]
    return [pool[k] for k in pick]


def tissue_metrics(real: Sequence[TissueProfile], sets: Sequence[Sequence[TissueProfile]],
                   pairs: Sequence[Sequence[tuple[int, int]]] = (), *, repeats: int = 20,
                   seed: int = 0) -> tuple[dict, list[dict]]:
    """``(real entry, one entry per set)`` of ``intensity_w1`` / ``spectrum`` / ``cjv`` value
    objects (module docstring); the real entry holds the split-half reference."""
    names = ("intensity_w1", "spectrum", "cjv")
    pairs = list(pairs) or [[] for _ in sets]
    n = len(real)
    if n < 4:  # no halves to compare: full-set distances, no reference
        rows = []
        for s in sets:
            d = _distances(real, s)
            rows.append({k: _over_splits([d[k]], "full sets (real too small for split halves)") for k in names})
            rows[-1].update(_descriptors(s, seed))
        return {k: None for k in names} | _descriptors(real, seed), rows
    rng = np.random.default_rng(seed)
    h = n // 2
    ref: dict[str, list[float]] = {k: [] for k in names}
    syn: list[dict[str, list[float]]] = [{k: [] for k in names} for _ in sets]
    for _ in range(repeats):
        perm = rng.permutation(n)
        a, b = [real[i] for i in perm[:h]], perm[h : 2 * h]
        for k, v in _distances(a, [real[i] for i in b]).items():
            ref[k].append(v)
        for s, (profiles, prs) in enumerate(zip(sets, pairs)):
            chosen = _subset(prs, b, h, len(profiles), rng)
            for k, v in _distances(a, [profiles[j] for j in chosen]).items():
                syn[s][k].append(v)
    method = f"mean over {repeats} random real halves ({h} real vs {h})"
    real_row = {k: _over_splits(ref[k], f"real vs real, {method}") for k in names} | _descriptors(real, seed)
    rows = [{k: _over_splits(syn[s][k], method) for k in names} | _descriptors(sets[s], seed)
            for s in range(len(sets))]
    return real_row, rows
