"""Identity-level nearest neighbours: which training subject a volume is, not which voxels it has.

:class:`IdentityReference` holds the training cohort aligned onto its template
(:mod:`synthkit.privacy.audit.align`), each subject also mirrored left-right when ``flips`` is on.
:meth:`IdentityReference.compare` matches query volumes against it in two stages:

1. **screening**: every query is aligned onto the template and its residual compared with every
   training residual (cosine similarity, one matrix product);
2. **refinement**: for the ``candidates`` most similar training subjects of each query, the
   query is aligned directly onto that subject's aligned volume (starting from its template
   alignment) and the residual similarity and the Dice of the two head masks are computed
   again. A copy of a subject lines up with it far better than with the blurry template, and
   a different subject gains little.

Per query the result holds the nearest subject (refined residual similarity, called
``identity``), the second nearest among the candidates, the nearest/second-nearest distance
ratio ``(1 - s1) / (1 - s2)``, the best head-shape Dice among the candidates, and a (Q, R)
matrix of identity similarities (screening values; refined values for the candidates) that
attacks rank subjects by.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from synthkit.privacy.audit import align


@dataclass(frozen=True)
class IdentitySettings:
    """Residual band (``sigma``, ``highpass`` voxels), quantile matching, registration effort,
    candidates refined per query, left-right mirrored references."""

    sigma: float = 1.0
    highpass: float = 3.0
    match_histogram: bool = True
    iterations: int = align.ITERATIONS
    rounds: int = align.ROUNDS
    candidates: int = 3
    flips: bool = True


@dataclass(frozen=True)
class IdentityMatch:
    """Per query (Q,): ``nearest`` training index, ``similarity`` (refined residual cosine),
    ``second`` (-1 if none) and ``second_similarity``, ``ratio``, ``flipped`` (the nearest
    matched mirrored), ``shape_dice`` (best refined head Dice); ``matrix`` (Q, R) and
    ``dice_matrix`` (Q, R): screening values with refined values at the candidates; ``query``:
    the queries' own :class:`~synthkit.privacy.audit.align.Identity` on the template."""

    nearest: np.ndarray
    similarity: np.ndarray
    second: np.ndarray
    second_similarity: np.ndarray
    ratio: np.ndarray
    flipped: np.ndarray
    shape_dice: np.ndarray
    matrix: np.ndarray
    dice_matrix: np.ndarray
    query: align.Identity | None = None


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(Q, R) cosine similarity of flattened rows of a (Q, ...) and b (R, ...)."""
    qa = np.asarray(a, dtype=np.float64).reshape(len(a), -1)
    rb = np.asarray(b, dtype=np.float64).reshape(len(b), -1)
    qn = np.maximum(np.linalg.norm(qa, axis=1), 1e-12)
    rn = np.maximum(np.linalg.norm(rb, axis=1), 1e-12)
    return (qa @ rb.T) / (qn[:, None] * rn[None, :])


class IdentityReference:
    """The training cohort on its template (see the module text). ``train``: prepared volumes
    (R, C, D, H, W)."""

    def __init__(self, train: np.ndarray, settings: IdentitySettings | None = None):
        self.settings = s = settings or IdentitySettings()
        train = np.asarray(train, dtype=np.float32)
        self.template, theta = align.build_template(train, rounds=s.rounds, iterations=s.iterations)
        variants = self._variants(train)
        self._place(variants, [theta] + [self._register(v) for v in variants[1:]])

    @classmethod
    def from_alignments(cls, train: np.ndarray, settings: IdentitySettings, theta: list[np.ndarray]
                        ) -> IdentityReference:
        """The reference :meth:`__init__` builds for ``train``, given the alignments it found
        (``theta``: one (R, 3, 4) per variant, :attr:`theta`): the template, aligned volumes and
        identities are recomputed from them, the registrations are not run."""
        self = cls.__new__(cls)
        self.settings = settings
        train = np.asarray(train, dtype=np.float32)
        variants = self._variants(train)
        if len(theta) != len(variants) or any(np.shape(t) != (len(train), 3, 4) for t in theta):
            raise ValueError("the alignments do not fit these training volumes and settings")
        self.template = align.template_of(train, theta[0])
        self._place(variants, list(theta))
        return self

    def _variants(self, train: np.ndarray) -> list[np.ndarray]:
        return [train] + ([np.ascontiguousarray(train[:, :, ::-1])] if self.settings.flips else [])

    def _place(self, variants: list[np.ndarray], theta: list[np.ndarray]) -> None:
        self.theta = theta
        self.aligned = [align.warp(v, th) for v, th in zip(variants, self.theta, strict=True)]
        self.ident = [self._identity(v, th) for v, th in zip(variants, self.theta, strict=True)]
        self.n = len(variants[0])

    @classmethod
    def from_state(cls, settings: IdentitySettings, template: align.Template, theta: list[np.ndarray],
                   aligned: list[np.ndarray], ident: list[align.Identity]) -> IdentityReference:
        """The reference exactly as :meth:`__init__` built it, from its template, alignments,
        aligned volumes and identities (kept from an earlier run: see
        :mod:`synthkit.privacy.audit.reference_cache`)."""
        self = cls.__new__(cls)
        self.settings, self.template = settings, template
        self.theta, self.aligned, self.ident = list(theta), list(aligned), list(ident)
        self.n = len(aligned[0])
        return self

    def _register(self, volumes: np.ndarray, theta0: np.ndarray | None = None, fixed: np.ndarray | None = None
                  ) -> np.ndarray:
        target = self.template.mean if fixed is None else fixed
        return align.register(volumes, target, iterations=self.settings.iterations, theta0=theta0)

    def _identity(self, volumes: np.ndarray, theta: np.ndarray) -> align.Identity:
        s = self.settings
        return align.identity(volumes, self.template, sigma=s.sigma, highpass=s.highpass, match=s.match_histogram,
                              theta=theta)

    def identify(self, volumes: np.ndarray) -> align.Identity:
        """Prepared volumes (N, C, D, H, W) aligned onto the template: their residuals and heads."""
        v = np.asarray(volumes, dtype=np.float32)
        return self._identity(v, self._register(v))

    def screen(self, queries: np.ndarray, theta: np.ndarray | None = None) -> tuple[align.Identity, np.ndarray,
                                                                                   np.ndarray, np.ndarray]:
        """Stage 1: (query identities, their template alignment (Q, 3, 4), similarity (Q, R) max
        over mirror variants, variant index (Q, R))."""
        q = np.asarray(queries, dtype=np.float32)
        theta = self._register(q) if theta is None else theta
        idq = self._identity(q, theta)
        sims = np.stack([cosine(idq.residual, ref.residual) for ref in self.ident])  # (V, Q, R)
        return idq, theta, sims.max(axis=0), sims.argmax(axis=0)

    def compare(self, queries: np.ndarray, *, exclude_self: bool = False, chunk: int = 48) -> IdentityMatch:
        """Match prepared ``queries`` (Q, C, D, H, W); ``exclude_self``: the queries are the
        training volumes themselves, in order (leave-one-out: a subject is never its own match)."""
        q = np.asarray(queries, dtype=np.float32)
        if exclude_self and len(q) != self.n:
            raise ValueError("exclude_self needs the training volumes themselves as queries")
        idq, theta, sim, variant = self.screen(q, self.theta[0] if exclude_self else None)
        dice = np.max([align.dice_matrix(idq.head, ref.head) for ref in self.ident], axis=0)
        if exclude_self:
            np.fill_diagonal(sim, -np.inf)
            np.fill_diagonal(dice, -np.inf)
        k = max(1, min(self.settings.candidates, self.n - int(exclude_self)))
        cand = np.argsort(-sim, axis=1, kind="stable")[:, :k]  # (Q, k)
        pairs = [(i, int(j)) for i in range(len(q)) for j in cand[i]]
        ref_sim, ref_dice = np.empty(len(pairs)), np.empty(len(pairs))
        for start in range(0, len(pairs), chunk):
            part = pairs[start:start + chunk]
            rs, rd = self._refine(q, theta, variant, part)
            ref_sim[start:start + chunk], ref_dice[start:start + chunk] = rs, rd
        matrix, dmat = sim.copy(), dice.copy()
        for (i, j), rs, rd in zip(pairs, ref_sim, ref_dice, strict=True):
            matrix[i, j], dmat[i, j] = rs, rd
        return dataclasses.replace(self._summarise(matrix, dmat, cand, variant), query=idq)

    def _refine(self, q: np.ndarray, theta: np.ndarray, variant: np.ndarray, pairs: list[tuple[int, int]]
                ) -> tuple[np.ndarray, np.ndarray]:
        """Refined residual cosine and head Dice for (query, training subject) pairs."""
        qi = np.array([i for i, _ in pairs])
        rj = np.array([j for _, j in pairs])
        vv = variant[qi, rj]
        fixed = np.stack([self.aligned[v][j] for v, j in zip(vv, rj, strict=True)])
        th = self._register(q[qi], theta0=theta[qi], fixed=fixed)
        idp = self._identity(q[qi], th)
        res_ref = np.stack([self.ident[v].residual[j] for v, j in zip(vv, rj, strict=True)])
        head_ref = np.stack([self.ident[v].head[j] for v, j in zip(vv, rj, strict=True)])
        sims = np.array([cosine(a[None], b[None])[0, 0] for a, b in zip(idp.residual, res_ref, strict=True)])
        dice = np.array([align.dice_matrix(a[None], b[None])[0, 0] for a, b in zip(idp.head, head_ref, strict=True)])
        return sims, dice

    @staticmethod
    def _summarise(matrix: np.ndarray, dmat: np.ndarray, cand: np.ndarray, variant: np.ndarray) -> IdentityMatch:
        rows = np.arange(len(matrix))
        refined = matrix[rows[:, None], cand]  # (Q, k)
        order = np.argsort(-refined, axis=1, kind="stable")
        first = cand[rows, order[:, 0]]
        s1 = matrix[rows, first]
        if cand.shape[1] > 1:
            second = cand[rows, order[:, 1]]
            s2 = matrix[rows, second]
            ratio = (1.0 - s1) / np.maximum(1.0 - s2, 1e-12)
        else:
            second, s2, ratio = np.full(len(rows), -1), np.full(len(rows), np.nan), np.full(len(rows), np.nan)
        shape = dmat[rows[:, None], cand].max(axis=1)
        return IdentityMatch(first, s1, second, s2, ratio, variant[rows, first].astype(bool), shape, matrix, dmat)
