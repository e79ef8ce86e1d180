"""The downstream segmentation benchmark: a plain 3D U-Net trained on real, synthetic or
augmented cases and scored on real test cases (the Med-DDPM paper's Table II protocol).

* :mod:`~synthkit.segmentation.unet`: :class:`UNet3D` (Çiçek et al. 2016);
* :mod:`~synthkit.segmentation.metrics`: per-case Dice, IoU, Accuracy, Recall, Precision;
* :mod:`~synthkit.segmentation.data`: cohorts as fixed-shape tensors;
* :mod:`~synthkit.segmentation.train`: BCE training loop and prediction;
* :mod:`~synthkit.segmentation.bench`: :func:`run_segbench`, one row per training set.

Submodules are imported on first use (importing this package does not import torch).
"""

from __future__ import annotations

from synthkit._lazy import lazy_getattr

_API = {
    "UNet3D": "synthkit.segmentation.unet",
    "segmentation_scores": "synthkit.segmentation.metrics",
    "summarize": "synthkit.segmentation.metrics",
    "load_segmentation_set": "synthkit.segmentation.data",
    "SegTrainConfig": "synthkit.segmentation.train",
    "train_segmenter": "synthkit.segmentation.train",
    "predict": "synthkit.segmentation.train",
    "TrainSpec": "synthkit.segmentation.bench",
    "run_segbench": "synthkit.segmentation.bench",
    "to_markdown": "synthkit.segmentation.bench",
}

__all__ = [
    "SegTrainConfig",
    "TrainSpec",
    "UNet3D",
    "load_segmentation_set",
    "predict",
    "run_segbench",
    "segmentation_scores",
    "summarize",
    "to_markdown",
    "train_segmenter",
]


__getattr__ = lazy_getattr(__name__, _API)
