"""Attacks on a synthetic cohort, measured rather than assumed away.

* **Re-identification (linkage).** Every synthetic volume was made from one patient's mask
  (its *source*). An attacker holding the training images ranks the training subjects by
  similarity to the synthetic volume; the attack succeeds at ``k`` when the source is among the
  top ``k``. Without leakage the source's rank is uniform, so the top-``k`` rate is ``k / N``
  (N training subjects); the p-value is the one-sided exact binomial test of the hits against
  that rate (:func:`scipy.stats.binomtest`). Volumes made from the same source are not
  independent, so with several per source the p-value is optimistic. The attacker's *best*
  statistic is the one with the highest top-1 rate (chosen after the fact: an upper bound on
  what a single attacker would get). Ties count against the attacker.
* **Membership inference from the model's loss.** Diffusion models denoise their training
  images better than unseen ones (loss-threshold attacks: Yeom et al. 2018; for diffusion
  models Matsumoto et al. 2023, and SecMI, Duan et al. 2023, which uses the error at a few
  fixed timesteps). :class:`DenoisingError` computes that error for one case at fixed
  timesteps with fixed noise; :func:`membership_attack` scores members (training cases) against
  non-members (holdout cases) by ROC AUC (0.5 = no leak) with a stratified bootstrap
  confidence interval and a one-sided Mann-Whitney p-value.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from synthkit.errors import SynthkitError, UsageError

DEFAULT_T_FRACTIONS = (0.02, 0.05, 0.1, 0.2)


# --------------------------------------------------------------------------- linkage
def source_ranks(scores: np.ndarray, sources: np.ndarray) -> np.ndarray:
    """Rank (1 = best) of each row's source among the columns of ``scores`` (S, N), higher is
    closer; ties with the source count as ranked above it."""
    s = np.asarray(scores, dtype=np.float64)
    src = np.asarray(sources, dtype=np.int64)
    true = s[np.arange(len(src)), src]
    other = np.ones_like(s, dtype=bool)
    other[np.arange(len(src)), src] = False
    return 1 + ((s >= true[:, None]) & other).sum(axis=1)


def linkage_attack(scores: Mapping[str, np.ndarray], sources: Sequence[int] | np.ndarray, *,
                   ks: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """Top-k re-identification of each synthetic volume's source, per attacker statistic.

    ``scores``: statistic name -> (S, N) similarities (higher = closer) of S synthetic volumes
    to N training subjects; ``sources`` (S,): each volume's source column, or -1 when unknown
    (left out). Returns per statistic the top-k rates, chance, hits and one-sided binomial
    p-values, the median rank, and ``best`` (the statistic with the highest top-1 rate).
    """
    src = np.asarray(sources, dtype=np.int64)
    known = src >= 0
    ranks: dict[str, np.ndarray] = {}
    n_train = 0
    for name, mat in scores.items():
        m = np.asarray(mat, dtype=np.float64)
        if m.ndim != 2 or m.shape[0] != len(src):
            raise ValueError(f"{name}: scores must be (S, N) with S = {len(src)}, got {m.shape}")
        if (src[known] >= m.shape[1]).any():
            raise ValueError(f"{name}: a source index is beyond the {m.shape[1]} training subjects")
        ranks[name] = source_ranks(m[known], src[known])
        n_train = m.shape[1]
    return linkage_from_ranks(ranks, n_train, n_synthetic=len(src), ks=ks)


def linkage_from_ranks(ranks: Mapping[str, Sequence[int] | np.ndarray], n_train: int, *,
                       n_synthetic: int | None = None, ks: Sequence[int] = (1, 5)) -> dict[str, Any]:
    """:func:`linkage_attack` from the source ranks alone (statistic -> (L,) ranks, 1 = best, of
    the L linked volumes among ``n_train`` training subjects), e.g. ranks recorded one volume at
    a time. ``n_synthetic``: all volumes, linked or not (default L)."""
    from scipy import stats

    arrays = {k: np.asarray(v, dtype=np.int64) for k, v in ranks.items()}
    n = len(next(iter(arrays.values()))) if arrays else 0
    out: dict[str, Any] = {"n_synthetic": n if n_synthetic is None else int(n_synthetic), "n_linked": n,
                           "test": "exact binomial, one-sided (greater), against chance k / N", "statistics": {}}
    if n == 0 or n_train < 1:
        out["note"] = "no synthetic volume has a known source among the training subjects"
        return out
    for name, r in arrays.items():
        if len(r) != n:
            raise ValueError(f"{name}: {len(r)} ranks, expected {n}")
        rec: dict[str, Any] = {"n_train": int(n_train), "median_rank": float(np.median(r)),
                               "chance_median_rank": (n_train + 1) / 2}
        for k in ks:
            hits = int((r <= k).sum())
            p0 = min(k / n_train, 1.0)
            p = float(stats.binomtest(hits, n, p0, alternative="greater").pvalue) if p0 < 1 else 1.0
            rec[f"top{k}"] = {"rate": hits / n, "chance": p0, "hits": hits, "n": n, "p_value": p}
        out["statistics"][name] = rec
    best = max(out["statistics"], key=lambda k: out["statistics"][k][f"top{ks[0]}"]["rate"])
    out["best"] = {"statistic": best, **out["statistics"][best]}
    return out


def sources_from_ids(synth_ids: Sequence[str], train_ids: Sequence[str], links: Mapping[str, str]) -> np.ndarray:
    """(S,) training index of each synthetic id's source case (``links``: synthetic id -> source
    case id), -1 where unknown or not a training case."""
    index = {t: j for j, t in enumerate(train_ids)}
    return np.array([index.get(links.get(s, ""), -1) for s in synth_ids], dtype=np.int64)


# --------------------------------------------------------------------------- membership
def roc_auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """AUC of scores where members should score higher (sklearn's roc_auc_score)."""
    from sklearn.metrics import roc_auc_score

    y = np.r_[np.ones(len(members)), np.zeros(len(nonmembers))]
    return float(roc_auc_score(y, np.r_[members, nonmembers]))


def _auc(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """The same AUC as :func:`roc_auc`, P(member > non-member) + P(tie) / 2, without sklearn's
    per-call overhead (for the bootstrap)."""
    d = np.asarray(members, dtype=np.float64)[:, None] - np.asarray(nonmembers, dtype=np.float64)[None, :]
    return float(((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size)


def membership_attack(member_errors: Iterable[float], nonmember_errors: Iterable[float], *, n_boot: int = 1000,
                      confidence: float = 0.95, seed: int = 0) -> dict[str, Any]:
    """Loss-threshold membership inference: a lower denoising error says "member".

    ``member_errors`` (training cases) and ``nonmember_errors`` (holdout cases) are each case's
    error (:class:`DenoisingError`). Returns the AUC of ``-error``, a percentile bootstrap
    interval (members and non-members resampled separately, ``numpy.random.default_rng(seed)``)
    and the one-sided Mann-Whitney p-value (members have lower errors).
    """
    from scipy import stats

    m = np.asarray(list(member_errors), dtype=np.float64)
    h = np.asarray(list(nonmember_errors), dtype=np.float64)
    if m.size < 2 or h.size < 2:
        raise ValueError("membership inference needs at least 2 members and 2 non-members")
    if not (np.isfinite(m).all() and np.isfinite(h).all()):
        raise ValueError("denoising errors must be finite")
    auc = roc_auc(-m, -h)
    rng = np.random.default_rng(seed)
    boots = np.array([_auc(-rng.choice(m, m.size), -rng.choice(h, h.size)) for _ in range(n_boot)])
    lo, hi = np.quantile(boots, [(1 - confidence) / 2, 1 - (1 - confidence) / 2])
    return {
        "auc": auc, "ci": [float(lo), float(hi)], "confidence": confidence, "n_boot": n_boot,
        "n_members": int(m.size), "n_nonmembers": int(h.size),
        "p_value": float(stats.mannwhitneyu(m, h, alternative="less").pvalue),
        "member_error_median": float(np.median(m)), "nonmember_error_median": float(np.median(h)),
        "score": "negative denoising error of the model at fixed timesteps and noise",
        "test": "Mann-Whitney U, one-sided (members have lower error); AUC interval: stratified percentile bootstrap",
    }


class DenoisingError:
    """``(image Volume (C, D, H, W), mask Volume (1, D, H, W)) -> float``: the model's mean
    squared error on its own training target (epsilon or v) for the preprocessed case, averaged
    over fixed timesteps, each with noise from ``torch.Generator().manual_seed(seed + i)`` (the
    same noise for every case, since every case is preprocessed to the same grid).

    ``model`` maps ``(N, C + K, D, H, W), (N,) -> (N, C, D, H, W)``; ``diffusion`` is a
    :class:`synthkit.diffusion.GaussianDiffusion`; ``preprocess`` the run's
    :class:`~synthkit.config.PreprocessConfig`. ``timesteps``: indices, default
    :data:`DEFAULT_T_FRACTIONS` of T.
    """

    def __init__(self, model: Any, diffusion: Any, preprocess: Any, *, timesteps: Sequence[int] | None = None,
                 seed: int = 0, device: str = "cpu", to_latent: Callable[[Any, Any], tuple[Any, Any]] | None = None):
        T = int(diffusion.num_timesteps)
        self.timesteps = tuple(sorted({min(T - 1, max(0, int(t))) for t in
                                       (timesteps or [round(f * T) for f in DEFAULT_T_FRACTIONS])}))
        self.model, self.diffusion, self.preprocess = model, diffusion, preprocess
        self.seed, self.device = int(seed), device
        self.to_latent = to_latent  # latent runs: (image, one-hot) -> (scaled latent mean, pooled mask)

    @classmethod
    def from_loaded(cls, gen: Any, **kw: Any) -> DenoisingError:
        """From a loaded run (``synthkit.pipeline.load`` / ``synthkit.run.load``): its ``model``,
        ``diffusion`` and ``config.preprocess``."""
        kind = getattr(gen.config, "model_type", "ddpm")
        if kind not in ("ddpm", "latent"):
            raise UsageError(f"membership inference by denoising error needs a diffusion model, not {kind!r}")
        to_latent = _latent_encoder(gen) if kind == "latent" else None
        return cls(gen.model, gen.diffusion, gen.config.preprocess, device=str(getattr(gen, "device", "cpu")),
                   to_latent=to_latent, **kw)

    @classmethod
    def from_run(cls, run: str | Path, device: str = "cpu", **kw: Any) -> DenoisingError:
        """Load ``run`` (a run folder or shipped model name) with :func:`synthkit.pipeline.load`."""
        from synthkit.pipeline import load

        return cls.from_loaded(load(run, device), **kw)

    def __call__(self, image: Any, mask: Any) -> float:
        import torch

        from synthkit.preprocess import one_hot, preprocess_case

        pre = preprocess_case(image, mask, self.preprocess)
        x0 = pre.image[None].to(self.device, torch.float32)
        cond = one_hot(pre.labels, tuple(self.preprocess.mask_labels))[None].to(self.device, torch.float32)
        errs = []
        with torch.inference_mode():
            if self.to_latent is not None:
                x0, cond = self.to_latent(x0, cond)
            for i, t in enumerate(self.timesteps):
                g = torch.Generator().manual_seed(self.seed + i)
                noise = torch.randn(x0.shape, generator=g, dtype=torch.float32).to(self.device)
                tt = torch.full((1,), t, dtype=torch.long, device=self.device)
                x_t = self.diffusion.q_sample(x0, tt, noise)
                out = self.model(self.diffusion.model_input(x_t, cond), tt).float()
                target = noise if self.diffusion.cfg.prediction == "epsilon" else self.diffusion.v_target(x0, noise, tt)
                errs.append(float(((out - target) ** 2).mean()))
        return float(np.mean(errs))


def _latent_encoder(gen: Any) -> Callable[[Any, Any], tuple[Any, Any]]:
    """For a latent run: the map the denoiser was trained through, (image, one-hot mask on the
    image grid) -> (posterior mean x scale factor, standardised per channel when the run does,
    average-pooled mask), as in latent training."""

    def to_latent(x0: Any, cond: Any) -> tuple[Any, Any]:
        mean, _ = gen.autoencoder.encode(x0)
        return gen.standardize(mean.float() * float(gen.scale_factor)), gen.latent_cond(cond)

    return to_latent


def case_errors(error: Callable[[Any, Any], float], cases: Iterable[tuple[str, Any, Any]],
                on_error: Callable[[str, Exception], None] | None = None) -> dict[str, float]:
    """``{case id: error(image, mask)}`` for (id, image Volume, mask Volume) cases; a case that
    fails goes to ``on_error`` (or raises)."""
    out: dict[str, float] = {}
    for cid, image, mask in cases:
        try:
            out[cid] = float(error(image, mask))
        except (ValueError, RuntimeError, SynthkitError) as e:
            if on_error is None:
                raise
            on_error(cid, e)
    return out
