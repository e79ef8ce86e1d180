"""Cohort-level privacy scores: does the synthetic set sit closer to its training set than to
real scans it never saw?

Both scores need a holdout set (real volumes from the same population, not trained on).

* **Closer-to-train fraction.** For each synthetic volume, is its nearest training volume
  more similar than its nearest holdout volume? If the generator has not memorised, the
  training and holdout volumes are exchangeable for it and the single nearest of all
  ``n_train + n_holdout`` real volumes is equally likely to be any of them, so the expected
  fraction is ``p0 = n_train / (n_train + n_holdout)`` (0.5 for equal sizes). A one-sided
  exact binomial test of ``k`` of ``n`` against ``p0`` gives the p-value (small p: closer to
  train than chance).
* **Membership-inference AUC.** Each real volume is scored by its similarity to the nearest
  synthetic volume; an attacker calls high scores "member". The AUC of that score for
  training (members) vs holdout (non-members) is 0.5 without leakage and 1.0 when the
  synthetic set identifies its training members. The p-value is a one-sided Mann-Whitney U
  test (equivalent to testing AUC > 0.5).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def closer_to_train(
    train_similarity: np.ndarray,
    holdout_similarity: np.ndarray,
    *,
    n_train: int,
    n_holdout: int,
) -> dict[str, Any]:
    """Binomial test of how many synthetic volumes are closer to train than to holdout.

    ``train_similarity`` and ``holdout_similarity`` are (S,) similarities of each synthetic
    volume to its nearest training and nearest holdout volume (higher = closer). Ties count
    as not closer to train.
    """
    from scipy import stats

    a = np.asarray(train_similarity, dtype=np.float64)
    b = np.asarray(holdout_similarity, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"similarity arrays must be equal-length 1-D, got {a.shape} and {b.shape}")
    if n_train < 1 or n_holdout < 1:
        raise ValueError("need at least one training and one holdout volume")
    n = int(a.size)
    k = int((a > b).sum())
    p0 = n_train / (n_train + n_holdout)
    if n == 0:
        return {"fraction": None, "expected": p0, "k": 0, "n": 0, "p_value": None, "p_value_two_sided": None}
    res_g = stats.binomtest(k, n, p0, alternative="greater")
    res_2 = stats.binomtest(k, n, p0, alternative="two-sided")
    return {
        "fraction": k / n,
        "expected": p0,
        "k": k,
        "n": n,
        "z": (k - n * p0) / float(np.sqrt(n * p0 * (1 - p0))),
        "p_value": float(res_g.pvalue),
        "p_value_two_sided": float(res_2.pvalue),
        "test": "exact binomial, one-sided (greater) against p0 = n_train / (n_train + n_holdout)",
    }


def membership_inference_auc(member_scores: np.ndarray, nonmember_scores: np.ndarray) -> dict[str, Any]:
    """AUC of ``member_scores`` (training volumes) vs ``nonmember_scores`` (holdout volumes),
    where each score is a real volume's similarity to its nearest synthetic volume.

    AUC = P(member > non-member) + 0.5 P(tie), i.e. the Mann-Whitney U statistic / (n_m n_n).
    """
    from scipy import stats

    m = np.asarray(member_scores, dtype=np.float64).ravel()
    h = np.asarray(nonmember_scores, dtype=np.float64).ravel()
    if m.size == 0 or h.size == 0:
        raise ValueError("membership inference needs at least one member and one non-member")
    if not (np.isfinite(m).all() and np.isfinite(h).all()):
        raise ValueError("membership scores must be finite")
    diff = m[:, None] - h[None, :]
    auc = float(((diff > 0).sum() + 0.5 * (diff == 0).sum()) / diff.size)
    p = float(stats.mannwhitneyu(m, h, alternative="greater").pvalue)
    return {
        "auc": auc,
        "n_members": int(m.size),
        "n_nonmembers": int(h.size),
        "p_value": p,
        "score": "similarity of each real volume to its nearest synthetic volume",
        "test": "Mann-Whitney U, one-sided (members more similar)",
    }
