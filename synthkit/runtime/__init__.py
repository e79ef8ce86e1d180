"""What training and inference share: the checkpoint format, the precision of network calls, DDP.

* :mod:`~synthkit.runtime.checkpoint`: the run folder's weight files and resumable checkpoints
  (one safetensors file each, a JSON document in its header; written atomically, read without
  unpickling): :func:`save_weights` / :func:`load_weights` / :func:`read_weights`,
  :func:`save_checkpoint` / :func:`load_checkpoint`, :func:`check_state_dict`;
* :mod:`~synthkit.runtime.precision`: bf16/fp16 support, the precision actually used, autocast;
* :mod:`~synthkit.runtime.ddp`: ``torchrun`` process groups, rank-0 writes, sharding work.

:mod:`synthkit.training` writes runs and :mod:`synthkit.pipeline` reads them; both import this
package and neither imports the other. Imported lazily (``import synthkit.runtime`` does not
import torch).
"""

from __future__ import annotations

from synthkit._lazy import lazy_dir, lazy_getattr

_API: dict[str, str] = {
    "TrainingState": "synthkit.runtime.checkpoint",
    "save_checkpoint": "synthkit.runtime.checkpoint",
    "load_checkpoint": "synthkit.runtime.checkpoint",
    "save_weights": "synthkit.runtime.checkpoint",
    "load_weights": "synthkit.runtime.checkpoint",
    "read_weights": "synthkit.runtime.checkpoint",
    "check_state_dict": "synthkit.runtime.checkpoint",
    "autocast_context": "synthkit.runtime.precision",
    "bf16_supported": "synthkit.runtime.precision",
    "resolve_precision": "synthkit.runtime.precision",
    "sampling_precision": "synthkit.runtime.precision",
    "DistInfo": "synthkit.runtime.ddp",
    "init_distributed": "synthkit.runtime.ddp",
}

__all__ = [*sorted(_API)]  # noqa: PLE0604 (the lazy names are the keys of _API)

__getattr__ = lazy_getattr(__name__, _API)

__dir__ = lazy_dir(__all__)
