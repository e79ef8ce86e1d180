"""Feature extractors for ``synthkit evaluate`` and ``synthkit privacy``: which network, which
intensity preprocessing, and what identifies both in reports and cache keys.

Choices (``--features``):

* ``deepbet`` (the default without MedicalNet weights): the pretrained encoder of deepbet's
  brain-extraction LinkNet3d, read offline from the installed wheel with a pinned SHA-256
  (:mod:`synthkit.metrics.deepbet`), with deepbet's own preprocessing; 256 features / channel.
* ``medicalnet-resnet10|18|34|50``: MedicalNet (Chen et al. 2019) from ``--feature-weights`` or,
  without a path, from the weights cache filled by ``synthkit weights fetch``
  (:mod:`synthkit.metrics.weights`); Med-DDPM's 3D-FID preprocessing
  (:mod:`synthkit.metrics.features`); 512 (2048 for resnet50) features / channel.
* ``random``: a seeded, randomly initialised MedicalNet. Only on request: its FID and MMD are
  comparable only within one run.

``auto`` (or no choice) means: ``--feature-weights`` or ``$SYNTHKIT_MEDICALNET_WEIGHTS`` if
given, else ``deepbet``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from synthkit.errors import UsageError
from synthkit.metrics import features as feat
from synthkit.metrics import medicalnet

__all__ = ["FEATURE_CHOICES", "RANDOM_WARNING", "Extractor", "make_extractor"]

FEATURE_CHOICES = ("auto", "deepbet", "random", "medicalnet-resnet10", "medicalnet-resnet18",
                   "medicalnet-resnet34", "medicalnet-resnet50")

RANDOM_WARNING = (
    "features come from a seeded RANDOMLY INITIALISED MedicalNet (--features random), so 3D-FID, "
    "MMD and precision/recall are NOT comparable to published numbers or to other runs (only to "
    "each other within this run). Use the default pretrained features (deepbet) or MedicalNet "
    "weights (synthkit weights fetch medicalnet-resnet10)."
)


@dataclass
class Extractor:
    """A feature network plus what identifies it.

    ``model`` maps ``(B, 1, D, H, W) -> (B, F)``; each channel of a volume is embedded on its
    own and the vectors concatenated, ``(C * F,)`` per volume. ``weights`` is the SHA-256 of
    the weights file, or ``"random"``.
    """

    model: torch.nn.Module
    kind: Literal["deepbet", "medicalnet", "random"]
    weights: str
    depth: int | None = None
    seed: int | None = None
    device: str = "cpu"
    source: str | None = None
    batch_size: int = 4

    @property
    def pretrained(self) -> bool:
        return self.kind != "random"

    @property
    def short(self) -> str:
        """``deepbet``, ``medicalnet-resnet10`` or ``random``: the ``--features`` value."""
        return self.kind if self.kind != "medicalnet" else f"medicalnet-resnet{self.depth}"

    @property
    def name(self) -> str:
        if self.kind == "deepbet":
            from synthkit.metrics.deepbet import DEEPBET_VERSION

            return f"deepbet {DEEPBET_VERSION} LinkNet3d encoder (bbox_model.pt), multi-level pooled"
        if self.kind == "medicalnet":
            return f"MedicalNet resnet{self.depth}"
        return f"MedicalNet resnet{self.depth} (random weights, seed {self.seed})"

    @property
    def prep_version(self) -> str:
        return "deepbet-v1" if self.kind == "deepbet" else feat.PREP_VERSION

    @property
    def prep_doc(self) -> str:
        if self.kind == "deepbet":
            from synthkit.metrics.deepbet import PREP_DOC

            return PREP_DOC
        return feat.EQUALIZATION_DOC

    @property
    def ident(self) -> str:
        """Cache-key identity: network, weights, preprocessing (and seed when random)."""
        seed = f":seed{self.seed}" if self.kind == "random" else ""
        return f"{self.short}:{self.weights}:{self.prep_version}{seed}"

    @property
    def feature_dim(self) -> int:
        """Features per channel."""
        return int(getattr(self.model, "out_features", 0)) or medicalnet.feature_dim(self.depth or 10)

    def prepare(self, vol: np.ndarray, affine: np.ndarray | None = None, *, nonzero_is_head: bool = False
                ) -> np.ndarray:
        """Network input for ``vol (C, D, H, W)``: deepbet's preprocessing (``(C, 128, 128, 128)``,
        RAS via ``affine``) or Med-DDPM's histogram equalization + MedicalNet z-score (same grid;
        the foreground is the nonzero voxels when ``nonzero_is_head``)."""
        if self.kind == "deepbet":
            from synthkit.metrics.deepbet import prepare

            return prepare(vol, affine)
        chans = [feat.equalize_foreground(c, c != 0 if nonzero_is_head else None) for c in vol]
        return np.stack([feat.medicalnet_normalize(c) for c in chans]).astype(np.float32)

    @torch.inference_mode()
    def embed(self, prepared: np.ndarray) -> np.ndarray:
        """Features ``(B, C * F)`` float32 of prepared volumes ``(B, C, *S)``, ``batch_size``
        channel volumes per forward pass."""
        x = np.ascontiguousarray(prepared, dtype=np.float32)
        if x.ndim != 5:
            raise ValueError(f"expected prepared volumes (B, C, D, H, W), got shape {x.shape}")
        b, c = x.shape[:2]
        flat = torch.from_numpy(x.reshape(b * c, 1, *x.shape[2:]))
        out = [self.model(flat[i:i + self.batch_size].to(self.device)).float().cpu()
               for i in range(0, len(flat), self.batch_size)]
        return torch.cat(out).reshape(b, -1).numpy()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "features": self.short, "kind": self.kind,
                "features_per_channel": self.feature_dim, "weights_sha256": self.weights,
                "weights_source": self.source, "depth": self.depth, "random_seed": self.seed,
                "pretrained": self.pretrained, "preprocessing": self.prep_doc}


def _medicalnet(path: Path, depth: int, device: str, source: str | None = None) -> Extractor:
    model = medicalnet.load(path, depth)
    return Extractor(model, "medicalnet", medicalnet.sha256_file(path), depth=depth, device=device,
                     source=source or path.name)


def make_extractor(weights: str | Path | None = None, depth: int = 10, seed: int = 0, device: str = "cpu",
                   features: str | None = None) -> Extractor:
    """The extractor for ``features`` (module docstring); ``weights`` is a MedicalNet file.

    Raises:
        UsageError: unknown choice, weights given with deepbet/random, cached weights missing.
        CheckpointError: a weights file that is not what it claims to be.
    """
    choice = (features or "auto").strip().lower()
    if choice not in FEATURE_CHOICES and choice != "medicalnet":
        raise UsageError(f"--features must be one of {', '.join(FEATURE_CHOICES)}, got {features!r}")
    path = Path(weights) if weights is not None else None
    if path is not None and choice in ("deepbet", "random"):
        raise UsageError(f"--feature-weights is a MedicalNet checkpoint; it cannot be used with --features {choice}")
    if choice in ("auto", "medicalnet") and path is None:
        path = medicalnet.default_weights_path()
    if choice in ("auto", "medicalnet") and path is not None:
        ext = _medicalnet(path, depth, device)
    elif choice == "medicalnet":
        raise UsageError("--features medicalnet needs --feature-weights (or use medicalnet-resnet10 .. 50)")
    elif choice.startswith("medicalnet-resnet"):
        d = int(re.sub(r"\D", "", choice))
        if path is None:
            from synthkit.metrics.weights import cached_weights

            path = cached_weights(choice)
        ext = _medicalnet(path, d, device, source=choice if weights is None else None)
    elif choice == "random":
        ext = Extractor(medicalnet.build(depth, seed=seed), "random", "random", depth=depth, seed=seed,
                        device=device)
    else:
        from synthkit.metrics import deepbet

        model, digest = deepbet.load()
        ext = Extractor(model, "deepbet", digest, device=device,
                        source=f"deepbet {deepbet.DEEPBET_VERSION} wheel, {deepbet.MODEL_FILE}")
    ext.model.to(device)
    return ext
