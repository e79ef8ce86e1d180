"""Binary segmentation scores: Dice, IoU, Accuracy, Recall and Precision, per case.

The scores of the paper's Table II, each computed **per case over the whole volume** from the
voxel-wise confusion counts of a binary prediction ``P`` against a binary reference ``R``::

    TP = |P ∩ R|     FP = |P \\ R|     FN = |R \\ P|     TN = |¬P ∩ ¬R|

    Dice      = 2 TP / (2 TP + FP + FN)
    IoU       = TP / (TP + FP + FN)                 (Jaccard index)
    Accuracy  = (TP + TN) / (TP + TN + FP + FN)     (all voxels, background included)
    Recall    = TP / (TP + FN)                      (sensitivity)
    Precision = TP / (TP + FP)                      (positive predictive value)

and then summarised as mean ± standard deviation over the test cases (population standard
deviation, ``ddof=0``), so a case with a small tumour weighs as much as one with a large tumour.

**Empty-case convention.** A ratio whose denominator is zero is scored 1.0 when the case is
perfectly empty (reference and prediction both contain no foreground voxel: nothing to find,
nothing found) and 0.0 otherwise. Concretely: with an empty reference, a prediction that is also
empty scores 1 everywhere; a prediction with any foreground voxel scores Dice = IoU = Recall =
Precision = 0. With a non-empty reference and an empty prediction, Precision (0/0) is 0.

Note on the paper: in Table II, Accuracy equals Recall in every row and the Precision standard
deviations are those of a 0/1 variable; the paper does not give its formulas. We use the textbook
definitions above (as in MONAI's ``ConfusionMatrixMetric``), so absolute values are comparable in
spirit, not digit for digit.

All functions are pure, take tensors and raise ``ValueError`` on bad shapes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

METRICS: tuple[str, ...] = ("dice", "iou", "accuracy", "recall", "precision")


@dataclass(frozen=True)
class Confusion:
    """Voxel counts per case, each a ``(N,)`` float64 tensor."""

    tp: torch.Tensor
    fp: torch.Tensor
    fn: torch.Tensor
    tn: torch.Tensor


def confusion(pred: torch.Tensor, ref: torch.Tensor) -> Confusion:
    """Per-case confusion counts of binary volumes.

    ``pred`` and ``ref``: ``(N, D, H, W)`` (or ``(N, ...)`` any spatial rank, or a single
    ``(D, H, W)`` volume treated as N=1); any dtype, non-zero means foreground.
    """
    if pred.shape != ref.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != reference shape {tuple(ref.shape)}")
    if pred.dim() < 2:
        raise ValueError(f"expected (N, D, H, W) or (D, H, W) volumes, got shape {tuple(pred.shape)}")
    if pred.dim() == 3:
        pred, ref = pred[None], ref[None]
    p = (pred != 0).reshape(pred.shape[0], -1)
    r = (ref != 0).reshape(ref.shape[0], -1)
    tp = (p & r).sum(1, dtype=torch.float64)
    fp = (p & ~r).sum(1, dtype=torch.float64)
    fn = (~p & r).sum(1, dtype=torch.float64)
    tn = (~p & ~r).sum(1, dtype=torch.float64)
    return Confusion(tp=tp, fp=fp, fn=fn, tn=tn)


def _ratio(num: torch.Tensor, den: torch.Tensor, c: Confusion) -> torch.Tensor:
    """``num / den``; where ``den == 0``: 1.0 for a perfectly empty case, else 0.0."""
    empty = (c.tp + c.fp + c.fn) == 0
    fallback = empty.to(torch.float64)
    safe = torch.where(den > 0, den, torch.ones_like(den))
    return torch.where(den > 0, num / safe, fallback)


def dice(c: Confusion) -> torch.Tensor:
    """``2TP / (2TP + FP + FN)`` per case, ``(N,)``."""
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn, c)


def iou(c: Confusion) -> torch.Tensor:
    """``TP / (TP + FP + FN)`` per case, ``(N,)``."""
    return _ratio(c.tp, c.tp + c.fp + c.fn, c)


def accuracy(c: Confusion) -> torch.Tensor:
    """``(TP + TN) / all voxels`` per case, ``(N,)``."""
    return _ratio(c.tp + c.tn, c.tp + c.tn + c.fp + c.fn, c)


def recall(c: Confusion) -> torch.Tensor:
    """``TP / (TP + FN)`` per case, ``(N,)``."""
    return _ratio(c.tp, c.tp + c.fn, c)


def precision(c: Confusion) -> torch.Tensor:
    """``TP / (TP + FP)`` per case, ``(N,)``."""
    return _ratio(c.tp, c.tp + c.fp, c)


def segmentation_scores(pred: torch.Tensor, ref: torch.Tensor) -> dict[str, torch.Tensor]:
    """All five scores per case: ``{"dice": (N,), "iou": (N,), ...}`` (float64)."""
    c = confusion(pred, ref)
    return {
        "dice": dice(c),
        "iou": iou(c),
        "accuracy": accuracy(c),
        "recall": recall(c),
        "precision": precision(c),
    }


def summarize(per_case: dict[str, torch.Tensor | list[float]]) -> dict[str, dict[str, float]]:
    """Mean and population standard deviation over cases: ``{"dice": {"mean", "std", "n"}}``."""
    out: dict[str, dict[str, float]] = {}
    for name, values in per_case.items():
        v = torch.as_tensor(values, dtype=torch.float64).flatten()
        if v.numel() == 0:
            out[name] = {"mean": math.nan, "std": math.nan, "n": 0}
            continue
        out[name] = {
            "mean": float(v.mean()),
            "std": float(v.std(correction=0)),
            "n": int(v.numel()),
        }
    return out
