"""Gaussian diffusion maths (Ho et al. 2020): forward noising, x0/eps/v conversions, posterior,
and the training loss. Tensors only: no network and no sampling loop live here.

Conditioning (Med-DDPM): the one-hot mask is concatenated to the noisy image along channels,
``torch.cat([x_t, cond], dim=1)``, in exactly one place: :meth:`GaussianDiffusion.model_input`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from synthkit import noise as noise_rule
from synthkit.config import DiffusionConfig
from synthkit.diffusion.schedule import make_betas

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class GaussianDiffusion:
    """Schedule tensors (float64 on the CPU, cast on use) and the maths built on them.

    ``t`` is an index ``0..T-1`` (papers' step ``t + 1``). All per-step coefficients are
    gathered for a batch ``t: (N,)`` and broadcast over ``(N, C, D, H, W)``.
    """

    def __init__(self, cfg: DiffusionConfig | None = None):
        self.cfg = cfg = cfg or DiffusionConfig()
        if cfg.prediction not in ("epsilon", "v"):
            raise ValueError(f"unknown prediction {cfg.prediction!r}; use 'epsilon' or 'v'")
        if cfg.loss not in ("l1", "l2"):
            raise ValueError(f"unknown loss {cfg.loss!r}; use 'l1' or 'l2'")
        self.num_timesteps = cfg.timesteps
        b = make_betas(cfg.schedule, cfg.timesteps, cfg.cosine_s)
        ab = torch.cumprod(1 - b, dim=0)
        ab_prev = torch.cat([torch.ones(1, dtype=ab.dtype), ab[:-1]])
        self.betas = b
        self.alphas = 1 - b
        self.alphas_cumprod = ab
        self.alphas_cumprod_prev = ab_prev
        self.sqrt_alphas_cumprod = ab.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1 - ab).sqrt()
        # q(x_{t-1} | x_t, x_0) = N(coef1 * x0 + coef2 * x_t, posterior_variance)  (Ho eq. 6-7)
        self.posterior_variance = b * (1 - ab_prev) / (1 - ab)
        self.posterior_mean_coef1 = b * ab_prev.sqrt() / (1 - ab)
        self.posterior_mean_coef2 = (1 - ab_prev) * (1 - b).sqrt() / (1 - ab)

    # -- helpers -------------------------------------------------------------------------
    @staticmethod
    def _gather(a: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """``a[t]`` shaped (N, 1, 1, ...) in ``like``'s dtype and device."""
        out = a.to(like.device)[t.to(like.device).long()].to(like.dtype)
        return out.view(-1, *([1] * (like.ndim - 1)))

    @staticmethod
    def model_input(x_t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """THE conditioning point: ``cat([x_t (N, C_img, ...), cond (N, K, ...)], dim=1)``."""
        if cond.shape[0] != x_t.shape[0] or cond.shape[2:] != x_t.shape[2:]:
            raise ValueError(
                f"mask {tuple(cond.shape)} does not match image {tuple(x_t.shape)} "
                "(need same N and spatial size)"
            )
        return torch.cat([x_t, cond.to(x_t.dtype)], dim=1)

    # -- forward process -----------------------------------------------------------------
    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """``x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) eps`` (Ho et al. 2020 eq. 4)."""
        return (
            self._gather(self.sqrt_alphas_cumprod, t, x0) * x0
            + self._gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise
        )

    def v_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``v = sqrt(ab_t) eps - sqrt(1 - ab_t) x0`` (Salimans & Ho 2022)."""
        return (
            self._gather(self.sqrt_alphas_cumprod, t, x0) * noise
            - self._gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0
        )

    # -- conversions ---------------------------------------------------------------------
    def x0_from_eps(self, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``x0 = (x_t - sqrt(1 - ab_t) eps) / sqrt(ab_t)``."""
        return (
            x_t - self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_t) * eps
        ) / self._gather(self.sqrt_alphas_cumprod, t, x_t)

    def eps_from_x0(self, x_t: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """``eps = (x_t - sqrt(ab_t) x0) / sqrt(1 - ab_t)``."""
        return (x_t - self._gather(self.sqrt_alphas_cumprod, t, x_t) * x0) / self._gather(
            self.sqrt_one_minus_alphas_cumprod, t, x_t
        )

    def model_output_to_eps_x0(
        self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(eps, x0) from the network output under ``cfg.prediction`` ("epsilon" or "v").

        For v: ``x0 = sqrt(ab) x_t - sqrt(1-ab) v``, ``eps = sqrt(1-ab) x_t + sqrt(ab) v``.
        """
        out = out.to(x_t.dtype)
        if self.cfg.prediction == "epsilon":
            return out, self.x0_from_eps(x_t, t, out)
        sa = self._gather(self.sqrt_alphas_cumprod, t, x_t)
        s1 = self._gather(self.sqrt_one_minus_alphas_cumprod, t, x_t)
        return s1 * x_t + sa * out, sa * x_t - s1 * out

    # -- reverse process -----------------------------------------------------------------
    def q_posterior(
        self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of ``q(x_{t-1} | x_t, x0)`` (Ho et al. 2020 eq. 6-7).

        Returns (mean (like x_t), variance (N, 1, ..., 1)). At ``t = 0`` the mean is x0.
        """
        mean = (
            self._gather(self.posterior_mean_coef1, t, x_t) * x0
            + self._gather(self.posterior_mean_coef2, t, x_t) * x_t
        )
        return mean, self._gather(self.posterior_variance, t, x_t)

    # -- training ------------------------------------------------------------------------
    def training_loss(
        self,
        model: Model,
        x0: torch.Tensor,
        cond: torch.Tensor,
        *,
        generator: torch.Generator | None = None,
        t: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
        cond_drop: float = 0.0,
    ) -> torch.Tensor:
        """Med-DDPM Algorithm 1: ``|target - model(cat(x_t, cond), t)|`` averaged (L1; or L2).

        Args:
            model: ``(N, C_img + K, D, H, W), (N,) -> (N, C_img, D, H, W)``.
            x0: (N, C_img, D, H, W) clean images in [-1, 1].
            cond: (N, K, D, H, W) one-hot mask, background dropped.
            generator: draws ``t ~ U{0..T-1}`` (unless ``t`` is given) and the noise, on the
                generator's device, then moved to ``x0``'s (:mod:`synthkit.noise`).
            weight: optional (N, 1, D, H, W) per-voxel loss weights (label weighting): the loss
                is then ``mean(weight * err) / mean(weight)``, equal to the plain mean for ones.
            cond_drop: the probability that a sample's condition is replaced by zeros (trains
                the unconditional model of classifier-free guidance, Ho & Salimans 2022); drawn
                after t and the noise, and only when > 0, so runs without it draw as before.
        Returns:
            scalar loss. The target is eps (``prediction="epsilon"``) or v.
        """
        n = x0.shape[0]
        if t is None:
            t = noise_rule.randint(self.num_timesteps, (n,), generator, x0.device)
        noise = noise_rule.randn(x0.shape, generator, x0.device, x0.dtype)
        if cond_drop > 0:
            keep = noise_rule.rand((n,), generator, cond.device) >= cond_drop
            cond = cond * keep.view(n, *([1] * (cond.ndim - 1))).to(cond.dtype)
        x_t = self.q_sample(x0, t, noise)
        out = model(self.model_input(x_t, cond), t).to(x0.dtype)
        target = noise if self.cfg.prediction == "epsilon" else self.v_target(x0, noise, t)
        if weight is None:
            return F.l1_loss(out, target) if self.cfg.loss == "l1" else F.mse_loss(out, target)
        err = (out - target).abs() if self.cfg.loss == "l1" else (out - target).square()
        weight = weight.to(err.dtype)
        return (err * weight).mean() / weight.mean()
