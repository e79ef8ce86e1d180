"""What a sampler needs besides the mask: label roles, voxel size, case id and a donor pool."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from synthkit.masks.labels import LabelRoles


class DonorPool(Protocol):
    """Source of other cases' masks for ``transplant``."""

    def case_ids(self) -> list[str]:
        """Ids of the cases that may donate (any order; the sampler sorts them)."""
        ...

    def load(self, case_id: str) -> tuple[np.ndarray, tuple[float, float, float]]:
        """(labels (D, H, W) integer, spacing mm) of a case; raise ``SynthkitError`` if unreadable."""
        ...


@dataclass
class InMemoryDonors:
    """A :class:`DonorPool` over masks already in memory: ``{case_id: (labels, spacing)}``."""

    masks: dict[str, tuple[np.ndarray, tuple[float, float, float]]]

    def case_ids(self) -> list[str]:
        return list(self.masks)

    def load(self, case_id: str) -> tuple[np.ndarray, tuple[float, float, float]]:
        return self.masks[case_id]


@dataclass(frozen=True)
class SampleContext:
    """Everything a ``sample`` function may look at apart from the mask and the generator.

    ``affine``: the mask's (4, 4) voxel -> RAS mm matrix, for operations that place world-
    oriented content (``template``); None means RAS voxel axes of size ``spacing``."""

    roles: LabelRoles
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    case_id: str = ""
    donors: DonorPool | None = None
    affine: Any = None

    def base_fields(self, labels: np.ndarray) -> dict[str, Any]:
        """The :class:`~synthkit.masks.params.OpParams` fields for this mask."""
        return {
            "shape": tuple(int(s) for s in labels.shape),
            "spacing": tuple(float(s) for s in self.spacing),
            "tumour_labels": tuple(self.roles.tumour),
            "head_labels": tuple(self.roles.head),
        }
