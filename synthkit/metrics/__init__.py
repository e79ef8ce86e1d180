"""Evaluation of synthetic cohorts: pure metric functions plus the ``synthkit evaluate`` pipeline.

Each metric lives in a module of its own name (import the function from it: a package-level
``fid`` would be shadowed by the submodule ``fid`` once imported)::

    from synthkit.metrics.fid import fid
    from synthkit.metrics.mmd import mmd
    from synthkit.metrics.ms_ssim import ms_ssim
    from synthkit.metrics import medicalnet
    model = medicalnet.load("resnet_10_23dataset.pth", depth=10)   # (N,1,D,H,W) -> (N,512)
    fid(feats_real, feats_synth); mmd(feats_real, feats_synth)     # (N,F) features
    ms_ssim(x, y, data_range=1.0)                                   # (N,C,D,H,W) -> (N,)

The non-colliding names below are exported lazily (torch loads only when one is used).
"""

from __future__ import annotations

from synthkit._lazy import lazy_getattr

_API: dict[str, str] = {
    "frechet_distance": "synthkit.metrics.fid",
    "diversity": "synthkit.metrics.ms_ssim",
    "resolve_settings": "synthkit.metrics.ms_ssim",
    "mse": "synthkit.metrics.paired",
    "mean_interval": "synthkit.metrics.bootstrap",
    "split_half_floor": "synthkit.metrics.bootstrap",
    "load_set": "synthkit.metrics.evaluate",
    "make_extractor": "synthkit.metrics.evaluate",
    "write_report": "synthkit.metrics.report",
}
_MODULES = {"medicalnet", "features", "baselines", "reader_study", "fid", "mmd", "ms_ssim", "paired",
            "bootstrap", "c2st", "evaluate", "report"}

__all__ = [
    "baselines",
    "bootstrap",
    "c2st",
    "diversity",
    "evaluate",
    "features",
    "fid",
    "frechet_distance",
    "load_set",
    "make_extractor",
    "mean_interval",
    "medicalnet",
    "mmd",
    "ms_ssim",
    "mse",
    "paired",
    "reader_study",
    "report",
    "resolve_settings",
    "split_half_floor",
    "write_report",
]


__getattr__ = lazy_getattr(__name__, _API, _MODULES)


def __dir__() -> list[str]:
    return __all__
