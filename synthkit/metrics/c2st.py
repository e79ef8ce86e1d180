"""Classifier two-sample test (Lopez-Paz & Oquab, "Revisiting Classifier Two-Sample Tests",
ICLR 2017): a small 3D CNN learns to tell real from synthetic volumes on a training split; its
held-out ROC AUC measures how distinguishable the sets are (0.5 = indistinguishable, 1 = always
told apart). Kept cheap: volumes are average-pooled to at most ``max_size`` voxels a side, the
network has ~25k parameters and trains for a fixed number of full-batch epochs on the CPU.

Deterministic given ``seed`` (split, initialisation and shuffling use explicit generators;
the global RNG is untouched).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["auc", "c2st"]


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC (:func:`sklearn.metrics.roc_auc_score`; ties count 1/2); labels 1 = positive.
    NaN when only one class is present."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels).astype(bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(scores, np.float64)))


def _net(channels: int, gen: torch.Generator) -> nn.Module:
    net = nn.Sequential(
        nn.Conv3d(channels, 8, 3, stride=2, padding=1), nn.GroupNorm(4, 8), nn.SiLU(),
        nn.Conv3d(8, 16, 3, stride=2, padding=1), nn.GroupNorm(4, 16), nn.SiLU(),
        nn.Conv3d(16, 32, 3, stride=2, padding=1), nn.GroupNorm(4, 32), nn.SiLU(),
        nn.AdaptiveAvgPool3d(1), nn.Flatten(), nn.Linear(32, 1),
    )
    with torch.no_grad():
        for p in net.parameters():
            if p.ndim > 1:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            else:
                p.zero_()
        for m in net.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.fill_(1.0)
    return net


def _shrink(x: torch.Tensor, max_size: int) -> torch.Tensor:
    while max(x.shape[2:]) > max_size:
        x = F.avg_pool3d(x, 2, ceil_mode=True)
    return x


def c2st(
    real: np.ndarray,
    synth: np.ndarray,
    *,
    seed: int = 0,
    test_fraction: float = 0.5,
    epochs: int = 60,
    max_size: int = 32,
    n_boot: int = 500,
) -> dict[str, Any]:
    """Held-out AUC of a real-vs-synthetic CNN. ``real (N, C, D, H, W)``, ``synth (M, C, D, H, W)``
    on the same grid, intensities in [0, 1]. Returns ``{"auc", "ci95", "n_train", "n_test", ...}``
    (the interval is a percentile bootstrap over the test items)."""
    if real.shape[1:] != synth.shape[1:]:
        raise ValueError(f"real {real.shape[1:]} and synthetic {synth.shape[1:]} volumes differ in shape")
    if len(real) < 4 or len(synth) < 4:
        raise ValueError("C2ST needs at least 4 volumes per set")
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    x = _shrink(torch.from_numpy(np.concatenate([real, synth])).float(), max_size)
    y = torch.cat([torch.zeros(len(real)), torch.ones(len(synth))])
    test_idx = []
    for cls in (0, 1):
        idx = np.flatnonzero(y.numpy() == cls)
        rng.shuffle(idx)
        test_idx.extend(idx[: max(2, round(len(idx) * test_fraction))])
    test = np.zeros(len(y), bool)
    test[test_idx] = True
    xtr, ytr, xte, yte = x[~test], y[~test], x[test], y[test]
    net = _net(x.shape[1], gen)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    batch = 16
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xtr), generator=gen)
        for i in range(0, len(perm), batch):
            b = perm[i : i + batch]
            loss = F.binary_cross_entropy_with_logits(net(xtr[b]).squeeze(1), ytr[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    net.eval()
    with torch.no_grad():
        scores = torch.cat([net(xte[i : i + batch]).squeeze(1) for i in range(0, len(xte), batch)]).numpy()
    labels = yte.numpy()
    value = auc(scores, labels)
    reps = []
    for _ in range(n_boot):
        i = rng.integers(0, len(labels), len(labels))
        if 0 < labels[i].sum() < len(i):
            reps.append(auc(scores[i], labels[i]))
    lo, hi = (np.percentile(reps, [2.5, 97.5]) if reps else (float("nan"), float("nan")))
    return {"auc": value, "ci95": [float(lo), float(hi)], "std": float(np.std(reps, ddof=1)) if len(reps) > 1 else 0.0,
            "n_train": int((~test).sum()), "n_test": int(test.sum()), "epochs": epochs,
            "input_shape": list(x.shape[2:]), "method": "3-conv CNN, held-out ROC AUC, bootstrap over test items"}
