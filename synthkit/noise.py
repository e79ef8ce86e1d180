"""The one rule for random draws in training and sampling: a CPU generator, then a move.

PyTorch's CPU and CUDA generators produce different streams from the same seed, and a CPU
``torch.Generator`` cannot fill a CUDA tensor directly. So every trainer (diffusion, latent,
autoencoder, GANs) and every sampling chain seeds a **CPU** generator (:func:`cpu_generator`)
and draws through :func:`randn` / :func:`rand` / :func:`randint`, which draw on the generator's
own device and then move the result to the target device. The same seed therefore gives the
same noise, bit for bit, whatever ``--device`` says; what differs between a CPU and a GPU run is
only the floating-point maths of the network.

The cost is one host-to-device copy per draw (a 128^3 volume of noise is 8 MB), small next to a
3D U-Net step.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def cpu_generator(seed: int) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed`` (the only kind synthkit trains and samples with)."""
    return torch.Generator(device="cpu").manual_seed(int(seed))


def _where(generator: torch.Generator | None) -> torch.device:
    return torch.device("cpu") if generator is None else torch.device(generator.device)


def randn(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str,
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal of ``shape``, drawn on ``generator``'s device, returned on ``device``."""
    x = torch.randn(tuple(int(s) for s in shape), generator=generator, device=_where(generator), dtype=dtype)
    return x.to(device)


def rand(shape: Sequence[int], generator: torch.Generator | None, device: torch.device | str,
         dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform [0, 1) of ``shape``, drawn on ``generator``'s device, returned on ``device``."""
    x = torch.rand(tuple(int(s) for s in shape), generator=generator, device=_where(generator), dtype=dtype)
    return x.to(device)


def randint(high: int, shape: Sequence[int], generator: torch.Generator | None,
            device: torch.device | str) -> torch.Tensor:
    """Integers uniform in ``[0, high)`` of ``shape`` (int64), drawn on ``generator``'s device,
    returned on ``device``."""
    x = torch.randint(0, int(high), tuple(int(s) for s in shape), generator=generator, device=_where(generator))
    return x.to(device)
