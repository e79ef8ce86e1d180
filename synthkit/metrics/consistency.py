"""Label fidelity, part 2: segmentation consistency.

A segmenter trained on the real cohort segments every synthetic volume; the Dice per label
against the mask the volume was generated from says whether the generator drew each label
where the mask put it (semantic image synthesis reports the same, e.g. SPADE's mIoU).

**Cross-fitting.** The real cases are split into two halves (a seeded permutation of their
content hashes, so the split does not depend on file names or order); one segmenter
(:mod:`synthkit.segmentation.multiclass`) is trained on each half. Every real case is segmented
by the model that did not see it: that Dice is the *ceiling*, what real images score. A
synthetic volume generated from real case ``i``'s mask is segmented by the model that did not
train on case ``i`` either (no memorised head shape can help); an unpaired synthetic volume
gets the mean Dice of the two models.

**Cache.** The two models are stored under ``<cache>/segmenters/<key>/`` (safetensors weights and
a JSON record with no case names), where ``key`` hashes the real cases' image and mask contents,
the label values and the segmenter settings; a second ``evaluate`` on the same real cohort loads
them instead of training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from synthkit.segmentation.multiclass import LabelSegConfig, build, predict_labels, train_multilabel

__all__ = ["CACHE_VERSION", "CrossFitted", "dice_per_label", "fit_crossfitted", "set_dice"]

CACHE_VERSION = "label-seg-v1"


def dice_per_label(pred: np.ndarray, target: np.ndarray, labels: Sequence[int]) -> np.ndarray:
    """Dice of every label value (NaN where the target lacks the label)."""
    out = np.full(len(labels), np.nan)
    for k, lab in enumerate(labels):
        t, p = target == lab, pred == lab
        nt = int(t.sum())
        if nt:
            out[k] = 2.0 * float((t & p).sum()) / (nt + int(p.sum()))
    return out


@dataclass
class CrossFitted:
    """Two segmenters and the half each was trained on (``half[key]`` is 0 or 1)."""

    models: list[torch.nn.Module]
    half: dict[str, int]
    labels: tuple[int, ...]  # label values; class k + 1 of the network is labels[k]
    cfg: LabelSegConfig
    trained: bool  # False when both came from the cache

    def to_labels(self, classes: torch.Tensor) -> np.ndarray:
        lut = np.array((0, *self.labels), dtype=np.int64)
        return lut[classes.numpy()]


def _cache_key(keys: Sequence[str], labels: Sequence[int], cfg: LabelSegConfig, channels: int) -> str:
    h = hashlib.sha256(f"{CACHE_VERSION}|{json.dumps(cfg.to_dict(), sort_keys=True)}|{list(labels)}|{channels}".encode())
    for k in sorted(keys):
        h.update(k.encode())
    return h.hexdigest()[:32]


def _halves(keys: Sequence[str], seed: int) -> dict[str, int]:
    order = sorted(set(keys))
    perm = np.random.default_rng(seed).permutation(len(order))
    return {order[p]: int(rank >= len(order) // 2) for rank, p in enumerate(perm)}


def _load(folder: Path, channels: int, labels: tuple[int, ...], cfg: LabelSegConfig) -> list[torch.nn.Module] | None:
    from safetensors.torch import load_file

    paths = [folder / f"half{h}.safetensors" for h in (0, 1)]
    if not all(p.is_file() for p in paths):
        return None
    models = []
    for p in paths:
        m = build(channels, len(labels) + 1, cfg)
        try:
            m.load_state_dict(load_file(str(p)))
        except (RuntimeError, OSError, ValueError):  # stale or damaged: train again
            return None
        models.append(m.eval())
    return models


def _save(folder: Path, models: list[torch.nn.Module], record: dict) -> None:
    from safetensors.torch import save_file

    from synthkit.io.atomic import atomic_path, write_json

    folder.mkdir(parents=True, exist_ok=True)
    for h, m in enumerate(models):
        with atomic_path(folder / f"half{h}.safetensors", suffix=".safetensors") as tmp:
            save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp))
    write_json(folder / "segmenter.json", record)


def fit_crossfitted(images: Sequence[np.ndarray], masks: Sequence[np.ndarray], keys: Sequence[str],
                    labels: Sequence[int], cfg: LabelSegConfig, *, cache_dir: Path | None = None,
                    device: str = "cpu", progress=None) -> CrossFitted:
    """Train (or load from the cache) the two half-cohort segmenters.

    ``images[i]`` ``(C, g, g, g)`` normalised, ``masks[i]`` ``(g, g, g)`` label values, ``keys[i]``
    the case's content hash; needs at least 4 cases."""
    if len(images) < 4:
        raise ValueError("segmentation consistency needs at least 4 real cases with masks")
    labels = tuple(int(v) for v in labels)
    channels = int(images[0].shape[0])
    half = _halves(keys, cfg.seed)
    folder = None if cache_dir is None else Path(cache_dir) / "segmenters" / _cache_key(keys, labels, cfg, channels)
    cached = _load(folder, channels, labels, cfg) if folder is not None else None
    if cached is not None:
        return CrossFitted(cached, half, labels, cfg, trained=False)
    lut = np.zeros(max(labels) + 1, dtype=np.int64)
    lut[list(labels)] = np.arange(1, len(labels) + 1)
    models = []
    for h in (0, 1):
        idx = [i for i, k in enumerate(keys) if half[k] == h]
        x = torch.from_numpy(np.stack([images[i] for i in idx]).astype(np.float32))
        y = torch.from_numpy(np.stack([lut[np.clip(masks[i], 0, len(lut) - 1)] for i in idx]))
        models.append(train_multilabel(x, y, len(labels) + 1, cfg, device=device, progress=progress,
                                       description=f"label segmenter {h + 1}/2").cpu())
    if folder is not None:
        _save(folder, models, {"version": CACHE_VERSION, "labels": list(labels), "channels": channels,
                               "config": cfg.to_dict(), "cases_per_half": [sum(v == h for v in half.values()) for h in (0, 1)]})
    return CrossFitted(models, half, labels, cfg, trained=True)


def _predict(cf: CrossFitted, h: int, image: np.ndarray, device: str) -> np.ndarray:
    model = cf.models[h].to(device)
    return cf.to_labels(predict_labels(model, torch.from_numpy(image[None].astype(np.float32)), device=device))[0]


def set_dice(cf: CrossFitted, images: Sequence[np.ndarray], masks: Sequence[np.ndarray | None],
             sources: Sequence[str | None], *, device: str = "cpu") -> np.ndarray:
    """Per-case Dice ``(N, L)``: case ``i`` is segmented by the model that did not train on
    ``sources[i]`` (the real case whose mask made it, or itself for a real case); by both, mean
    Dice, when ``sources[i]`` is None or not a training case. NaN rows for cases without a mask."""
    out = np.full((len(images), len(cf.labels)), np.nan)
    for i, (img, mask) in enumerate(zip(images, masks)):
        if mask is None:
            continue
        src = cf.half.get(sources[i]) if sources[i] is not None else None
        heads = [1 - src] if src is not None else [0, 1]
        scores = [dice_per_label(_predict(cf, h, img, device), mask, cf.labels) for h in heads]
        out[i] = np.mean(scores, axis=0)
    return out
