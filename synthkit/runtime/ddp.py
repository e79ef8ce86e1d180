"""Distributed data parallel (DDP) plumbing for ``torchrun``.

Under ``torchrun`` the environment carries ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the
rendezvous address; :func:`init_distributed` joins the process group (``nccl`` on CUDA,
``gloo`` on CPU). Without those variables everything degrades to a single process and no
process group is created. Only rank 0 writes files; every rank computes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    initialized_here: bool = False  # we created the process group, so we tear it down

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def env_is_main() -> bool:
    """Whether this process is rank 0 (or not under ``torchrun``), before joining the group: what
    a command asks to decide whether it shows a progress bar."""
    return int(os.environ.get("RANK", "0")) == 0


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the ``torchrun`` process group if there is one; pick this rank's device.

    ``device="cuda"`` under DDP becomes ``cuda:<LOCAL_RANK>``.
    """
    world = env_world_size()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if device == "cuda" and world > 1:
        device = f"cuda:{local}"
        torch.cuda.set_device(local)
    if world <= 1:
        return DistInfo(device=device)
    created = False
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        created = True
    return DistInfo(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local,
                    device=device, initialized_here=created)


def barrier(info: DistInfo) -> None:
    if info.distributed:
        if info.device.startswith("cuda"):
            dist.barrier(device_ids=[info.local_rank])
        else:
            dist.barrier()


def mean_scalar(value: float, info: DistInfo) -> float:
    """Average a Python float over ranks (for logging the loss)."""
    if not info.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / info.world_size


def gather_tensors(t: torch.Tensor, info: DistInfo) -> list[torch.Tensor]:
    """All ranks' copies of a same-shaped tensor (list indexed by rank), on CPU."""
    if not info.distributed:
        return [t.cpu()]
    src = t.to(info.device)
    out = [torch.empty_like(src) for _ in range(info.world_size)]
    dist.all_gather(out, src)
    return [o.cpu() for o in out]


def shard(items: list, info: DistInfo) -> list:
    """This rank's share of a work list (round-robin: rank r gets items r, r+W, r+2W, ...)."""
    return items[info.rank :: info.world_size]


def cleanup(info: DistInfo) -> None:
    if info.initialized_here and dist.is_initialized():
        dist.destroy_process_group()
