"""The Pipeline: a loaded model that turns masks into volumes, the same way for every model kind.

Three steps, each its own method, so that callers can batch the middle one (after the input
mask is put into the network's label values by the run's recorded rules)::

    net = pipe.to_network_mask(mask, image=img, labels=names)  # input labels -> the network's values
    cond, record, has_head = pipe.prepare(net, "network")      # mask -> network grid (K, d, h, w)
    x = pipe.sample_batch(conds, seeds, ...)    # (B, K, d, h, w) -> (B, C, d, h, w) in [-1, 1]
    vol = pipe.to_volume(x[i], record)          # back to mask i's own grid and affine

:meth:`Pipeline.sample` chains them for one mask. A model kind (diffusion, Pix2Pix, DiscoGAN,
...) is a subclass registered with :func:`synthkit.pipeline.registry.register_kind`; it says how
its network is built (:meth:`Pipeline.build_network`), what stands for its schedule
(:meth:`Pipeline.build_schedule`) and how one batch is sampled (:meth:`Pipeline.sample_batch`).

``sample_batch`` contract: volume ``i`` depends only on ``cond[i]`` and ``seeds[i]`` (its own
``torch.Generator``), never on the rest of the batch, up to floating-point differences of the
batched network call (bit-identical at batch size 1; within 1e-4 of the intensity range
otherwise, measured in tests/test_engine.py).

Intensities of generated volumes: the network works in [-1, 1]; samples are mapped to the
training cohort's typical range (``intensity.json``: per channel, the median over training
cases of the ``clip_percentiles`` bounds inside the head), so -1 becomes that ``lo`` and +1
``hi``. Without ``intensity.json`` the output is scaled to [0, 1].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np
import torch

from synthkit.config import RunConfig
from synthkit.errors import UsageError

Progress = Callable[[int, int], None]


class Prepared(NamedTuple):
    """A mask on the network grid: ``cond`` ``(K, d, h, w)`` one-hot (background dropped), the
    ``record`` that maps back to the mask's grid, and whether a head/brain label is present
    (a tuple, so ``cond, record, has_head = pipe.prepare(mask)`` works as before)."""

    cond: torch.Tensor
    record: Any
    has_head: bool


def as_mask_volume(mask: Any, affine: np.ndarray | None = None) -> Any:
    """A label ``Volume`` ``(1, D, H, W)`` from a Volume, a NIfTI path, or an integer array
    ``(D, H, W)`` / ``(1, D, H, W)`` (with ``affine``, default identity)."""
    from synthkit.io.volume import Volume

    if isinstance(mask, (str, Path)):
        from synthkit.io.nifti import read_nifti

        return read_nifti(mask, is_label=True)
    if isinstance(mask, np.ndarray) or torch.is_tensor(mask):
        arr = np.asarray(mask.cpu() if torch.is_tensor(mask) else mask)
        if arr.ndim == 3:
            arr = arr[None]
        return Volume(arr.astype(np.int16), np.eye(4) if affine is None else affine)
    return mask


class Pipeline:
    """A loaded model: config, network (eval mode, frozen), schedule, preprocessing, intensities.

    Attributes: ``run_dir``, ``config`` (:class:`RunConfig`), ``model``, ``diffusion`` (the
    schedule; for one-pass models an object with ``num_timesteps == 1``), ``device``,
    ``intensity`` (``{"lo": [...], "hi": [...]}`` per channel), ``weights_sha256``,
    ``precision`` (autocast of the network calls; None = fp32).
    """

    #: The ``config.model_type`` values this class serves (set by ``register_kind``).
    kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, run_dir: Path, config: RunConfig, model: torch.nn.Module, diffusion: Any,
                 device: str, intensity: dict[str, list[float]], weights_sha256: str,
                 precision: str | None = None):
        self.run_dir = run_dir
        self.config = config
        self.model = model
        self.diffusion = diffusion
        self.device = device
        self.intensity = intensity
        self.weights_sha256 = weights_sha256
        self.precision = precision

    # -------------------------------------------------------------- what a kind provides
    @classmethod
    def from_run(cls, run_dir: Path, config: RunConfig, device: str, precision: str | None = None) -> Pipeline:
        """Build from a run folder (called by :func:`synthkit.pipeline.load`). Default: one
        network (:meth:`build_network`) in ``model.safetensors``; a kind with several weight
        files (e.g. an autoencoder and a latent denoiser) overrides this."""
        from synthkit.pipeline.weights import load_network, read_intensity

        model, sha = load_network(lambda: cls.build_network(config), run_dir, device)
        return cls(run_dir, config, model, cls.build_schedule(config), device, read_intensity(run_dir), sha,
                   precision)

    @classmethod
    def build_network(cls, cfg: RunConfig) -> torch.nn.Module:
        """The network whose weights ``model.safetensors`` holds (built from ``cfg``)."""
        raise NotImplementedError

    @classmethod
    def build_schedule(cls, cfg: RunConfig) -> Any:
        """What stands where the diffusion schedule stands (needs ``num_timesteps``)."""
        raise NotImplementedError

    def check_sampling(self, sampler: str | None, steps: int | None, eta: float) -> tuple[str, int | None]:
        """Validate sampler options for this kind; returns the (sampler, steps) to record."""
        raise NotImplementedError

    def sample_batch(self, cond: torch.Tensor, seeds: Sequence[int], *, sampler: str = "ddpm",
                     steps: int | None = None, eta: float = 0.0, background: Sequence[bool] | None = None,
                     progress: Progress | None = None, guidance: float = 1.0) -> torch.Tensor:
        """``cond`` ``(B, K, d, h, w)`` -> ``(B, C, d, h, w)`` float32 in [-1, 1] on the CPU, in
        ONE batched network call per step. ``seeds[i]`` seeds volume ``i``'s own generator;
        ``background[i]`` holds volume ``i`` at -1 outside its head. ``progress(done, total)``
        after every step."""
        raise NotImplementedError

    # -------------------------------------------------------------- shared
    @property
    def preprocess(self):
        return self.config.preprocess

    @property
    def image_channels(self) -> int:
        return self.config.model.image_channels

    @property
    def kind(self) -> str:
        return self.config.model_type

    def __repr__(self) -> str:
        m = self.config.model
        return (f"{type(self).__name__}(run={str(self.run_dir)!r}, kind={self.kind!r}, preset={self.config.preset!r}, "
                f"channels={m.image_channels}, mask_labels={self.preprocess.mask_labels}, "
                f"shape={self.preprocess.target_shape}, device={self.device!r})")

    def head_values(self) -> set[int]:
        """Label values that cover the whole head/brain (background option, see :meth:`prepare`)."""
        from synthkit.masks.labels import is_head_name

        vals = {int(v) for k, v in self.config.data.labels.items() if is_head_name(k) and int(v) != 0}
        if self.preprocess.brain_label is not None:
            vals.add(int(self.preprocess.brain_label))
        return vals

    def network_labels(self) -> dict[str, int]:
        """The label table of masks in the network's values (what :meth:`to_network_mask`
        returns and what synthkit writes as ``labelsTr``): ``background: 0`` and every value of
        ``mask_labels``, named as in ``config.data.labels`` (the first name of a value; BraTS
        trained the paper's way: necrotic core 1, edema 2, enhancing 3, brain 4), else
        ``label_{v}``."""
        names: dict[int, str] = {}
        for name, v in self.config.data.labels.items():
            names.setdefault(int(v), str(name))
        out = {"background": 0}
        for v in sorted({int(v) for v in self.preprocess.mask_labels} - {0}):
            name = names.get(v, f"label_{v}")
            out[name if name not in out else f"{name}_{v}"] = v
        return out

    def to_network_mask(self, mask: Any, *, image: Any = None, labels: dict[str, int] | None = None,
                        label_space: str = "auto") -> Any:
        """An input mask Volume ``(1, D, H, W)`` -> the same grid in the network's label values,
        by the rules the run recorded (``config.preprocess``), int16.

        1. **Values.** ``label_space="auto"`` (default): when ``labels`` (the input cohort's
           declared name -> value, e.g. from its ``dataset.json`` or the BraTS layout) names
           only labels the run knows (:meth:`network_labels`, names compared case-insensitively),
           values are translated by name (raw BraTS ``enhancing 4`` -> 3, and a dataset synthkit
           wrote, with its consecutive values, back to the run's); otherwise as ``"raw"``.
           ``"raw"``: ``label_map`` by value (masks labelled like the training files);
           ``"network"``: unchanged.
        2. **Brain label.** When the run adds a brain label (``brain_label``) and the mask does
           not carry it, it is added from ``image`` (a Volume ``(C, D, H, W)`` on the mask's
           grid, or a callable returning one or None; only its first channel is used) exactly
           as in training (:func:`synthkit.preprocess.case.add_brain_label`). Without an image
           the mask stays without it (the model then sees no brain outline).
        """
        from synthkit.errors import CohortError
        from synthkit.io.volume import Volume, grid_mismatch
        from synthkit.preprocess.case import add_brain_label, remap_labels

        if label_space not in ("auto", "raw", "network"):
            raise UsageError(f"label_space must be 'auto', 'raw' or 'network', not {label_space!r}")
        data = np.asarray(mask.data[0]).astype(np.int16, copy=False)
        by_name = _name_translation(labels, self.network_labels()) if label_space == "auto" else None
        if by_name is not None:
            data = remap_labels(data, by_name)
        elif label_space in ("auto", "raw"):
            data = remap_labels(data, self.preprocess.label_map)
        brain = self.preprocess.brain_label
        if brain is not None and not np.any(data == int(brain)):
            img = image() if callable(image) else image
            if img is not None:
                why = grid_mismatch(img.spatial_shape, img.affine, mask.spatial_shape, mask.affine)
                if why:
                    raise CohortError(f"image and mask are not on the same grid ({why}), needed for the "
                                      "run's brain label")
                data = add_brain_label(data, np.asarray(img.data[0]), self.preprocess)
        return Volume(np.asarray(data, dtype=np.int16)[None], mask.affine)

    def prepare(self, mask: Any, label_space: str = "raw") -> Prepared:
        """Mask Volume ``(1, D, H, W)`` -> :class:`Prepared` (cond ``(K, d, h, w)``, GridRecord,
        has_head); unpacks as a 3-tuple.

        ``label_space``: ``"raw"`` (default) for masks labelled like the training cohort's
        files (``label_map`` is applied); ``"network"`` for masks already in the network's
        label values (``config.data.labels``, e.g. BraTS masks that carry the brain label 4
        after ET was mapped to 3): ``label_map`` is not applied again.
        ``has_head`` is True when a head/brain label is present in the mask: then voxels where
        the one-hot mask is all zero are outside the head, and the sampler's ``background``
        option may hold them at -1.
        """
        from synthkit.preprocess import one_hot, preprocess_case

        if label_space not in ("raw", "network"):
            raise UsageError(f"label_space must be 'raw' or 'network', not {label_space!r}")
        cfg = self.preprocess if label_space == "raw" else dataclasses.replace(self.preprocess, label_map=None)
        pre = preprocess_case(None, mask, cfg)
        cond = one_hot(pre.labels, tuple(self.preprocess.mask_labels))
        present = set(torch.unique(pre.labels).tolist())
        return Prepared(cond, pre.record, bool(self.head_values() & present))

    def to_volume(self, x: torch.Tensor, record: Any) -> Any:
        """Network-grid sample ``(C, d, h, w)`` in [-1, 1] -> Volume on the mask's own grid,
        intensities mapped to the training cohort's range (or [0, 1])."""
        from synthkit.preprocess import to_original_grid

        c = int(x.shape[0])
        lo = self.intensity.get("lo") or [0.0] * c
        hi = self.intensity.get("hi") or [1.0] * c
        record = dataclasses.replace(record, lo=tuple(float(v) for v in lo[:c]), hi=tuple(float(v) for v in hi[:c]))
        return to_original_grid(x, record)

    def background_mask(self, cond: torch.Tensor, background: Sequence[bool] | None) -> torch.Tensor | None:
        """``(B, 1, d, h, w)`` bool, True outside the head of each volume whose flag is set
        (where its one-hot ``cond`` is all zero); None when no flag is set."""
        if background is None or not any(background):
            return None
        flags = torch.tensor([bool(b) for b in background], device=cond.device).view(-1, 1, 1, 1, 1)
        return (cond.sum(dim=1, keepdim=True) == 0) & flags

    @staticmethod
    def _check_batch(cond: torch.Tensor, seeds: Sequence[int], background: Sequence[bool] | None) -> None:
        if cond.ndim != 5 or cond.shape[0] != len(seeds) or not len(seeds):
            raise ValueError(f"cond must be (N, K, D, H, W) with N = len(seeds) >= 1, got {tuple(cond.shape)}")
        if background is not None and len(background) != len(seeds):
            raise ValueError(f"background needs one flag per volume ({len(seeds)}), got {len(background)}")

    def sample(self, mask: Any, *, seed: int = 0, sampler: str = "ddpm", steps: int | None = None,
               eta: float = 0.0, background: bool | None = None, affine: np.ndarray | None = None,
               label_space: str = "auto", image: Any = None, labels: dict[str, int] | None = None,
               progress: Progress | None = None, guidance: float = 1.0) -> Any:
        """Generate one volume for ``mask``; returns a ``Volume`` ``(C, D, H, W)`` float32 on the
        mask's own grid and affine.

        ``mask``: a label ``Volume`` ``(1, D, H, W)``, a NIfTI path, or an integer array
        ``(D, H, W)`` (with ``affine``, default identity). ``sampler``: ``"ddpm"`` (all T steps,
        the paper) or ``"ddim"`` (``steps`` of them); one-pass kinds ignore it. ``background``:
        hold the predicted x0 at -1 outside the head (where the one-hot mask is all zero);
        default: on when the mask holds a head/brain label. ``label_space``, ``image`` (for the
        run's brain label) and ``labels`` (the mask's label names): see :meth:`to_network_mask`.
        ``guidance``: classifier-free guidance weight on the mask (diffusion kinds trained with
        ``cond_drop``; 1 = none). Same arguments and seed -> bit-identical output, and the same as a batch-1 run of
        ``synthkit sample``.
        """
        net = self.to_network_mask(as_mask_volume(mask, affine), image=image, labels=labels, label_space=label_space)
        cond, record, has_head = self.prepare(net, "network")
        use_bg = has_head if background is None else bool(background)
        x = self.sample_batch(cond[None], [seed], sampler=sampler, steps=steps, eta=eta,
                              background=[use_bg], progress=progress, guidance=guidance)
        return self.to_volume(x[0], record)


def _name_translation(labels: dict[str, int] | None, network: dict[str, int]) -> dict[str, int] | None:
    """``{str(input value): network value}`` when every named foreground label of ``labels`` is
    one the network knows (case-insensitive); None otherwise (or without names)."""
    if not labels:
        return None
    known = {k.lower(): int(v) for k, v in network.items()}
    fg = {str(k).lower(): int(v) for k, v in labels.items() if int(v) != 0}
    if not fg or any(k not in known for k in fg):
        return None
    return {str(v): known[k] for k, v in fg.items()}
