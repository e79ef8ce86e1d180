"""synthkit: synthetic, shareable 3D medical image cohorts with Med-DDPM.

The public API is small and imported lazily (importing ``synthkit`` does not import torch).
"""

from __future__ import annotations

from synthkit._lazy import lazy_dir, lazy_getattr

__version__ = "0.1.0"

# public name -> module that defines it
_API: dict[str, str] = {
    "RunConfig": "synthkit.config",
    "ModelConfig": "synthkit.config",
    "DiffusionConfig": "synthkit.config",
    "PreprocessConfig": "synthkit.config",
    "TrainConfig": "synthkit.config",
    "model_config": "synthkit.config",
    "SynthkitError": "synthkit.errors",
    # data
    "Volume": "synthkit.io.volume",
    "discover_cohort": "synthkit.io.cohort",
    "read_image": "synthkit.io.cohort",
    "read_mask": "synthkit.io.cohort",
    "read_nifti": "synthkit.io.nifti",
    "write_nifti": "synthkit.io.nifti",
    "check_cohort": "synthkit.io.check",
    "write_demo_cohort": "synthkit.io.demo_cohort",
    "preprocess_case": "synthkit.preprocess",
    "to_original_grid": "synthkit.preprocess",
    # model
    "build_denoiser": "synthkit.networks",
    "GaussianDiffusion": "synthkit.diffusion",
    "sample": "synthkit.diffusion",
    "train": "synthkit.training",
    "load": "synthkit.pipeline.loading",
    "Pipeline": "synthkit.pipeline.pipeline",
    "sample_masks": "synthkit.jobs.sample",
    "cache_cohort": "synthkit.cache",
    # pipelines
    "augment_cohort": "synthkit.jobs.augment",
    "validate_nnunet_dataset": "synthkit.augment",
    "run_segbench": "synthkit.segmentation.bench",
    "run_demo": "synthkit.demo",
}

__all__ = [*sorted(_API), "__version__"]  # noqa: PLE0604 (the lazy names are the keys of _API)


__getattr__ = lazy_getattr(__name__, _API)

__dir__ = lazy_dir(__all__)
