"""Argument checks and the random draws of a sampling chain, shared by every sampler.

``generator`` is either one ``torch.Generator`` for the whole batch (each draw is one
``randn`` of the batch's shape, as before) or a sequence of N generators, one per volume: then
volume ``i``'s x_T and every later noise draw come only from generator ``i`` (drawn per volume,
then stacked), so a volume's randomness does not depend on the rest of the batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from synthkit import noise as noise_rule

Generators = torch.Generator | Sequence[torch.Generator]


def check_generators(generator: Generators, n: int, device: torch.device) -> None:
    """Raise TypeError/ValueError unless ``generator`` is one Generator or N of them, each on the
    CPU or on ``device``."""
    gens = [generator] if isinstance(generator, torch.Generator) else generator
    if isinstance(gens, (str, bytes)) or not isinstance(gens, Sequence) or not gens or not all(
        isinstance(g, torch.Generator) for g in gens
    ):
        raise TypeError(
            "generator must be a torch.Generator or a sequence of them, one per volume "
            "(sampling randomness is explicit)"
        )
    if not isinstance(generator, torch.Generator) and len(gens) != n:
        raise ValueError(f"got {len(gens)} generators for a batch of {n}; pass one per volume")
    for g in gens:  # a CPU generator serves any device (synthkit.noise); a GPU one only its own
        kind = torch.device(g.device).type
        if kind != "cpu" and kind != device.type:
            raise ValueError(
                f"generator is on {g.device} but cond is on {device}; "
                "use a CPU generator (synthkit.noise.cpu_generator)"
            )


def check_sampling_args(
    cond: torch.Tensor,
    generator: Generators,
    image_channels: int,
    background: torch.Tensor | None,
) -> torch.Tensor | None:
    """Validate the sampler inputs; returns ``background`` as a (N, 1, D, H, W) bool tensor."""
    if cond.ndim != 5:
        raise ValueError(f"cond must be (N, K, D, H, W), got shape {tuple(cond.shape)}")
    if image_channels < 1:
        raise ValueError(f"image_channels must be >= 1, got {image_channels}")
    check_generators(generator, cond.shape[0], cond.device)
    if background is None:
        return None
    if background.ndim == 4:
        background = background[:, None]
    n, _, *spatial = cond.shape
    if background.shape != (n, 1, *spatial):
        raise ValueError(
            f"background must be (N, 1, D, H, W) = {(n, 1, *spatial)}, got {tuple(background.shape)}"
        )
    if background.dtype != torch.bool:
        background = background > 0.5
    return background.to(cond.device)


def randn(shape: Sequence[int], generator: Generators, device: torch.device) -> torch.Tensor:
    """Float32 standard normal of ``shape`` (N, ...) on ``device``, drawn on each generator's own
    device and moved (:mod:`synthkit.noise`: a CPU generator gives the same noise on any device).

    One generator: a single draw of the whole shape. N generators: volume ``i`` is drawn from
    generator ``i`` alone as shape (1, ...), then the N draws are concatenated along dim 0, so
    it equals what a batch-1 call with that generator draws.
    """
    shape = tuple(int(s) for s in shape)
    if isinstance(generator, torch.Generator):
        return noise_rule.randn(shape, generator, device)
    one = (1, *shape[1:])
    return torch.cat([noise_rule.randn(one, g, device) for g in generator], 0)


def start_chain(
    cond: torch.Tensor,
    generator: Generators,
    image_channels: int,
    background: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check the sampler inputs (:func:`check_sampling_args`) and draw x_T.

    Returns:
        x_T: (N, image_channels, D, H, W) float32 standard normal from ``generator`` (see
        :func:`randn`), on ``cond``'s device; background: (N, 1, D, H, W) bool or None.
    """
    bg = check_sampling_args(cond, generator, image_channels, background)
    n, _, *spatial = cond.shape
    return randn((n, image_channels, *spatial), generator, cond.device), bg


def noise_like(x: torch.Tensor, generator: Generators) -> torch.Tensor:
    """Fresh float32 standard normal noise of ``x``'s shape and device (see :func:`randn`)."""
    return randn(x.shape, generator, x.device)
