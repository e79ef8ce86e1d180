"""Distances between volumes that a copy cannot hide from, and nearest neighbours.

Every volume is first brought onto a common *comparison grid*: reoriented to RAS (so the
first spatial axis is left-right and a left-right flip is ``x[..., ::-1, :, :]``), resampled
to a fixed shape, and its intensities standardised inside the head (zero mean, unit variance
per channel over head voxels; zero outside). Two prepared volumes ``a`` and ``b`` are then
compared by their normalised cross-correlation (the Pearson correlation inside the head)

    ncc(a, b) = <a, b> / (|a| |b|)

maximised over integer shifts ``delta`` in ``[-s, s]^3`` of ``b`` (zero-padded, not
wrapped) and over ``b`` and its left-right mirror. A training volume copied with a voxel or
two of shift, or mirrored, therefore still scores close to 1.

All pairwise work is ``(Q, V) @ (V, R)`` matrix products (V = C*D*H*W), one per shift and
flip, so comparing 100 x 100 volumes at 32^3 takes seconds on a CPU.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from synthkit.preprocess.grid import resize, to_ras

if TYPE_CHECKING:  # pragma: no cover
    import torch

DEFAULT_SHAPE: tuple[int, int, int] = (32, 32, 32)


# --------------------------------------------------------------------------- preparation
def head_mask(image: np.ndarray, threshold: float = 0.05, labels: np.ndarray | None = None) -> np.ndarray:
    """Voxels inside the head: (D, H, W) bool.

    The first channel of ``image`` (C, D, H, W) is smoothed (Gaussian, sigma 1 voxel, so that
    background noise does not pass), min-max scaled between its 0.5th and 99.5th percentiles and
    thresholded at ``threshold``; the largest connected component is kept and its holes filled.
    Non-zero ``labels`` (D, H, W) are added (a tumour is inside the head).
    """
    from scipy import ndimage

    x = ndimage.gaussian_filter(image[0].astype(np.float64), 1.0, mode="nearest")
    lo, hi = np.percentile(x, [0.5, 99.5])
    fg = (x - lo) / (hi - lo) > threshold if hi > lo else np.zeros(x.shape, bool)
    if fg.any():
        lab, n = ndimage.label(fg)
        if n > 1:
            sizes = ndimage.sum_labels(fg, lab, index=np.arange(1, n + 1))
            fg = lab == (1 + int(np.argmax(sizes)))
        fg = ndimage.binary_fill_holes(fg)
    if labels is not None:
        fg = fg | (labels > 0)
    return fg


def prepare(
    image: np.ndarray,
    affine: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    *,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    head_threshold: float = 0.05,
) -> np.ndarray:
    """One volume on the comparison grid: (C, *shape) float32, standardised inside the head.

    ``image`` is (C, D, H, W) or (D, H, W); ``affine`` maps voxels to RAS mm (identity, i.e.
    already RAS, when None); ``labels`` (D, H, W) or (1, D, H, W) optionally marks the head.
    Raises ``ValueError`` for an image with no head voxels or no contrast.
    """
    img = np.asarray(image, dtype=np.float32)
    if img.ndim == 3:
        img = img[None]
    if img.ndim != 4:
        raise ValueError(f"expected an image (C, D, H, W), got shape {img.shape}")
    lab = None if labels is None else np.asarray(labels).reshape(img.shape[1:]).astype(np.float32)[None]
    if affine is not None:
        img = to_ras(img, affine)
        lab = None if lab is None else to_ras(lab, affine)
    img = resize(img, shape)
    lab = None if lab is None else resize(lab, shape, label=True)[0]
    head = head_mask(img, head_threshold, lab)
    if head.sum() < 8:
        raise ValueError("no head voxels found (is the image empty?)")
    out = np.zeros_like(img)
    for c in range(img.shape[0]):
        v = img[c][head].astype(np.float64)
        sd = v.std()
        if not np.isfinite(sd) or sd == 0:
            raise ValueError("image has no contrast inside the head")
        out[c][head] = ((v - v.mean()) / sd).astype(np.float32)
    return out


# --------------------------------------------------------------------------- shifts and flips
def shift_volumes(x: torch.Tensor, delta: tuple[int, int, int], out: torch.Tensor | None = None) -> torch.Tensor:
    """Shift (N, C, D, H, W) by integer ``delta`` voxels along (D, H, W); vacated voxels are 0.
    ``out``: a tensor like ``x`` to write into (every voxel is written: a buffer reused across
    shifts, only its vacated borders are zeroed)."""
    import torch

    if out is None:
        out = torch.zeros_like(x)
        fresh = True
    else:
        fresh = False
    src: list[slice] = [slice(None), slice(None)]
    dst: list[slice] = [slice(None), slice(None)]
    for d, n in zip(delta, x.shape[2:], strict=True):
        if abs(d) >= n:
            return out.zero_()
        src.append(slice(max(0, -d), n - max(0, d)))
        dst.append(slice(max(0, d), n - max(0, -d)))
    out[tuple(dst)] = x[tuple(src)]
    if not fresh:
        for axis, d in enumerate(delta):
            if d:
                edge = [slice(None)] * out.ndim
                edge[2 + axis] = slice(0, d) if d > 0 else slice(out.shape[2 + axis] + d, None)
                out[tuple(edge)] = 0
    return out


@dataclass(frozen=True)
class Alignment:
    """Best match of every query against every reference.

    similarity: (Q, R) max NCC over shifts and flips; shift: (Q, R, 3) int, the shift applied
    to the (possibly mirrored) reference; flipped: (Q, R) bool, reference mirrored left-right.
    """

    similarity: np.ndarray
    shift: np.ndarray
    flipped: np.ndarray


def pairwise_similarity(
    queries: np.ndarray,
    references: np.ndarray,
    *,
    max_shift: int = 2,
    flips: bool = True,
    exclude_self: bool = False,
) -> Alignment:
    """Max normalised cross-correlation of every query against every reference.

    ``queries`` (Q, C, D, H, W) and ``references`` (R, C, D, H, W) come from :func:`prepare`.
    ``exclude_self`` (queries *are* the references) sets the diagonal to -inf, for
    leave-one-out nearest neighbours. Returns an :class:`Alignment`.
    """
    import torch

    q = torch.as_tensor(np.asarray(queries, dtype=np.float32))
    r = torch.as_tensor(np.asarray(references, dtype=np.float32))
    if q.ndim != 5 or r.ndim != 5 or q.shape[1:] != r.shape[1:]:
        raise ValueError(f"queries {tuple(q.shape)} and references {tuple(r.shape)} must be (N, C, D, H, W) alike")
    if exclude_self and q.shape[0] != r.shape[0]:
        raise ValueError("exclude_self needs queries and references to be the same set")
    nq, nr = q.shape[0], r.shape[0]
    qf = q.reshape(nq, -1).double()
    qn = qf.norm(dim=1).clamp_min(1e-12)
    best = torch.full((nq, nr), -float("inf"), dtype=torch.float64)
    best_shift = torch.zeros((nq, nr, 3), dtype=torch.int64)
    best_flip = torch.zeros((nq, nr), dtype=torch.bool)
    rng = range(-max_shift, max_shift + 1)
    for flip in (False, True) if flips else (False,):
        # in float64 once per mirror, not per shift (exact: shifting only moves values)
        base = (torch.flip(r, dims=(2,)) if flip else r).double()
        buf = torch.empty_like(base)  # one buffer for every shift: no fresh 16 MB allocation each time
        for delta in itertools.product(rng, rng, rng):
            rs = shift_volumes(base, delta, out=buf).reshape(nr, -1)
            rn = rs.norm(dim=1).clamp_min(1e-12)
            sim = (qf @ rs.T) / (qn[:, None] * rn[None, :])
            better = sim > best
            if better.any():
                best = torch.where(better, sim, best)
                best_shift[better] = torch.tensor(delta, dtype=torch.int64)
                best_flip[better] = flip
    sim_np = best.numpy().copy()
    if exclude_self:
        np.fill_diagonal(sim_np, -np.inf)
    return Alignment(sim_np, best_shift.numpy(), best_flip.numpy())


def align(reference: np.ndarray, shift: tuple[int, int, int] | np.ndarray, flipped: bool) -> np.ndarray:
    """Apply a match's mirror and shift to one prepared reference (C, D, H, W), for display."""
    import torch

    t = torch.as_tensor(np.asarray(reference, dtype=np.float32))[None]
    if flipped:
        t = torch.flip(t, dims=(2,))
    return shift_volumes(t, tuple(int(s) for s in shift))[0].numpy()


# --------------------------------------------------------------------------- neighbours
@dataclass(frozen=True)
class Neighbours:
    """Nearest and second-nearest reference of every query (Q,) arrays.

    ``ratio`` = (1 - similarity) / (1 - second_similarity): very small when one reference is
    far closer than all others (a copy); NaN when there is no second reference.
    """

    nearest: np.ndarray
    similarity: np.ndarray
    second: np.ndarray
    second_similarity: np.ndarray
    shift: np.ndarray
    flipped: np.ndarray
    ratio: np.ndarray


def nearest_neighbours(alignment: Alignment) -> Neighbours:
    """Nearest and second-nearest neighbours from an :class:`Alignment` (ties: lowest index)."""
    sim = alignment.similarity
    nq, nr = sim.shape
    if nr == 0:
        raise ValueError("no reference volumes to compare against")
    order = np.argsort(-sim, axis=1, kind="stable")
    rows = np.arange(nq)
    first = order[:, 0]
    s1 = sim[rows, first]
    if nr > 1 and np.isfinite(sim[rows, order[:, 1]]).all():
        second = order[:, 1]
        s2 = sim[rows, second]
        ratio = (1.0 - s1) / np.maximum(1.0 - s2, 1e-12)
    else:
        second = np.full(nq, -1)
        s2 = np.full(nq, np.nan)
        ratio = np.full(nq, np.nan)
    return Neighbours(
        nearest=first,
        similarity=s1,
        second=second,
        second_similarity=s2,
        shift=alignment.shift[rows, first],
        flipped=alignment.flipped[rows, first],
        ratio=ratio,
    )


def feature_distances(queries: np.ndarray, references: np.ndarray, *, exclude_self: bool = False) -> np.ndarray:
    """Cosine distances (Q, R) between feature rows; ``references`` may be (R, F) or (R, K, F)
    with K variants of each reference (e.g. the volume and its mirror), minimised over K."""
    q = np.asarray(queries, dtype=np.float64)
    r = np.asarray(references, dtype=np.float64)
    if r.ndim == 2:
        r = r[:, None, :]
    if q.ndim != 2 or r.ndim != 3 or q.shape[1] != r.shape[2]:
        raise ValueError(f"feature shapes {q.shape} and {r.shape} do not match")
    qn = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    rn = r / np.maximum(np.linalg.norm(r, axis=2, keepdims=True), 1e-12)
    d = 1.0 - np.einsum("qf,rkf->qrk", qn, rn).max(axis=2)
    d = np.maximum(d, 0.0)
    if exclude_self:
        if d.shape[0] != d.shape[1]:
            raise ValueError("exclude_self needs queries and references to be the same set")
        np.fill_diagonal(d, np.inf)
    return d


def ssim(a: np.ndarray, b: np.ndarray, *, window: int = 7) -> float:
    """Structural similarity (Wang et al. 2004) of two prepared volumes (C, D, H, W), with a
    uniform ``window``^3 window, averaged over channels and voxels. Constants use the joint
    intensity range, since prepared volumes are standardised rather than in [0, 1]."""
    from scipy import ndimage

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"shapes {a.shape} and {b.shape} differ")
    rng = max(float(np.ptp(a)), float(np.ptp(b)), 1e-12)
    c1, c2 = (0.01 * rng) ** 2, (0.03 * rng) ** 2
    vals = []
    for x, y in zip(a, b, strict=True):
        f = lambda z: ndimage.uniform_filter(z, size=window, mode="constant")
        mx, my = f(x), f(y)
        vx, vy, cxy = f(x * x) - mx * mx, f(y * y) - my * my, f(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
        vals.append(s.mean())
    return float(np.mean(vals))
