"""Volume sets on the comparison grid, and the result record of a memorization check."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from synthkit.privacy.audit import memorization


class FeatureExtractor(Protocol):
    """Maps prepared volumes (N, C, D, H, W) float32 to features (N, F). ``name`` is recorded;
    an optional ``pretrained`` attribute (default True) says whether the space is meaningful
    enough for its distances to flag volumes."""

    name: str

    def __call__(self, volumes: np.ndarray) -> np.ndarray: ...


@dataclass
class VolumeSet:
    """Volumes on the comparison grid. prepared: (N, C, D, H, W); features: (N, F) and the
    features of the left-right mirrored volumes (N, F), or None without an extractor."""

    ids: list[str]
    prepared: np.ndarray
    features: np.ndarray | None = None
    features_flipped: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.ids)


Item = tuple[str, np.ndarray, "np.ndarray | None", "np.ndarray | None"]  # id, image, affine, labels


def prepare_set(
    items: Iterable[Item],
    settings: Any,
    extractor: FeatureExtractor | None = None,
    *,
    on_error: Callable[[str, Exception], None] | None = None,
    mirrored: bool = True,
) -> VolumeSet:
    """Prepare (id, image (C, D, H, W), affine or None, labels or None) items with
    ``settings.shape`` / ``settings.head_threshold`` (a :class:`~synthkit.privacy.audit.check.CheckSettings`).
    A volume that cannot be prepared raises ``ValueError`` unless ``on_error(id, exc)`` is
    given (then skipped). Features are added when ``settings.use_features`` and ``extractor``
    (and those of the mirrored volumes with ``mirrored``: see :func:`with_features`)."""
    ids: list[str] = []
    arrays: list[np.ndarray] = []
    for case_id, image, affine, labels in items:
        try:
            arrays.append(memorization.prepare(image, affine, labels, shape=settings.shape,
                                               head_threshold=settings.head_threshold))
        except ValueError as e:
            if on_error is None:
                raise ValueError(f"{case_id}: {e}") from None
            on_error(case_id, e)
            continue
        ids.append(case_id)
    if arrays and len({a.shape for a in arrays}) != 1:
        raise ValueError("volumes have different channel counts: " + ", ".join(sorted({str(a.shape[0]) for a in arrays})))
    prepared = np.stack(arrays) if arrays else np.zeros((0, 1, *settings.shape), np.float32)
    return with_features(VolumeSet(ids, prepared), extractor if settings.use_features else None, mirrored=mirrored)


def with_features(vs: VolumeSet, extractor: FeatureExtractor | None, *, mirrored: bool = True) -> VolumeSet:
    """``vs`` with the features of its volumes and, with ``mirrored``, of their left-right mirrors
    (unchanged without an extractor). The check compares every query with each training volume
    and its mirror: only a training set needs the mirrors' features, and a query set (synthetic,
    holdout, planted copies) is cheaper without them."""
    if extractor is None or len(vs) == 0:
        return vs
    feats = np.asarray(extractor(vs.prepared), dtype=np.float64)
    flipped = (np.asarray(extractor(np.ascontiguousarray(vs.prepared[:, :, ::-1])), dtype=np.float64)
               if mirrored else None)
    return VolumeSet(vs.ids, vs.prepared, feats, flipped)


@dataclass
class PrivacyResult:
    """Everything ``synthkit privacy`` reports. ``volumes`` has one dict per synthetic volume;
    ``attacks`` holds the linkage and membership-inference results when they were run."""

    volumes: list[dict[str, Any]]
    cohort: dict[str, Any]
    calibration: dict[str, Any]
    settings: dict[str, Any]
    not_computed: list[str] = field(default_factory=list)
    attacks: dict[str, Any] = field(default_factory=dict)
    details: Any = field(default=None, repr=False)  # raw matches (check.Details), not serialised

    @property
    def flagged(self) -> list[dict[str, Any]]:
        return [v for v in self.volumes if v["flagged"]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "volumes": self.volumes,
            "cohort": self.cohort,
            "calibration": self.calibration,
            "settings": self.settings,
            "not_computed": self.not_computed,
            "attacks": self.attacks,
        }
