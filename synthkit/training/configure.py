"""Fit a :class:`~synthkit.config.RunConfig` to a cohort: channels and mask classes come from
the data (``dataset.json``), not from code.

* ``data.channel_names``: the cohort's; ``data.labels``: the cohort's label names with the
  values the network sees (after ``label_map``), plus ``"brain"`` for ``brain_label``.
* ``preprocess.mask_labels``: when left at the default ``(1, 2)``, derived from the cohort's
  label values: every non-background value after ``label_map``, plus ``brain_label``
  (BraTS: labels 1, 2, 4 with ``label_map {"4": 3}`` and ``brain_label 4`` -> ``(1, 2, 3, 4)``).
  An explicit, different ``mask_labels`` is kept as given.
* ``model.image_channels = len(channel_names)``; ``model.mask_classes = len(mask_labels)``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from synthkit.config import PreprocessConfig, RunConfig
from synthkit.errors import UsageError


def derive_mask_labels(labels: dict[str, int], label_map: dict[str, int] | None,
                       brain_label: int | None) -> tuple[int, ...]:
    """Non-background label values after ``label_map``, plus ``brain_label``, sorted."""
    values = set()
    for v in labels.values():
        v = int(v)
        if label_map and str(v) in label_map:
            v = int(label_map[str(v)])
        if v != 0:
            values.add(v)
    if brain_label is not None:
        values.add(int(brain_label))
    return tuple(sorted(values))


def fit_config_to_cohort(cfg: RunConfig, cohort: Any) -> RunConfig:
    """``cfg`` with data/preprocess/model channel settings taken from ``cohort``."""
    channel_names = tuple(cohort.channel_names) or ("image",)
    pre = cfg.preprocess
    raw = {str(k): int(v) for k, v in dict(cohort.labels).items()}
    # labels as the network sees them: after label_map, plus the brain label
    labels = {k: int((pre.label_map or {}).get(str(v), v)) for k, v in raw.items()}
    if pre.brain_label is not None and int(pre.brain_label) not in labels.values():
        labels["brain"] = int(pre.brain_label)
    mask_labels = pre.mask_labels
    if tuple(mask_labels) == tuple(PreprocessConfig().mask_labels):
        derived = derive_mask_labels(raw, pre.label_map, pre.brain_label)
        if derived:
            mask_labels = derived
    if not mask_labels:
        raise UsageError("the cohort has no foreground labels to condition on", cohort.root)
    return dataclasses.replace(
        cfg,
        data=dataclasses.replace(cfg.data, channel_names=channel_names, labels=labels),
        preprocess=dataclasses.replace(pre, mask_labels=tuple(mask_labels)),
        model=dataclasses.replace(cfg.model, image_channels=len(channel_names), mask_classes=len(mask_labels)),
    )


def same_architecture(a: RunConfig, b: RunConfig) -> str | None:
    """Why two configs cannot share weights/a resumed run (None when they can)."""
    if a.model_type != b.model_type:
        return "the model type differs from the run's config.json"
    # activation checkpointing changes memory use, not the weights: it may differ on resume
    ma = dataclasses.replace(a.model, gradient_checkpointing=False)
    mb = dataclasses.replace(b.model, gradient_checkpointing=False)
    if ma != mb:
        return "the model settings differ from the run's config.json"
    for part in ("diffusion", "preprocess", "data"):
        if getattr(a, part) != getattr(b, part):
            return f"the {part} settings differ from the run's config.json"
    return None
