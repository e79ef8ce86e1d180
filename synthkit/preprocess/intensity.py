"""The intensity foreground of a volume, shared by the metrics and the label segmenter (both
normalise and compare tissue over it)."""

from __future__ import annotations

import numpy as np


def foreground(v: np.ndarray) -> np.ndarray:
    """Boolean foreground of one channel ``(D, H, W)``: above 5% of the p1..p99 range."""
    p1, p99 = (float(q) for q in np.percentile(v, [1, 99]))
    if p99 <= p1:
        p99 = float(v.max())
    return v > p1 + 0.05 * (p99 - p1)
