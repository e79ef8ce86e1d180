"""Evaluation of synthetic cohorts: pure metric functions plus the ``synthkit evaluate`` pipeline.

The metrics are functions (MONAI style); their modules are private (``_fid``, ``_mmd``, ...)::

    from synthkit.metrics import fid, mmd, ms_ssim, prdc, make_extractor
    ext = make_extractor()                         # pretrained deepbet encoder, offline
    feats = ext.embed(prepared)                    # (N, C, *S) prepared volumes -> (N, C*F)
    fid(feats_real, feats_synth); mmd(feats_real, feats_synth)     # (N, F) features
    prdc(feats_real, feats_synth, k=5)             # {"precision", "recall", "density", "coverage"}
    ms_ssim(x, y, data_range=1.0)                  # (N, C, D, H, W) -> (N,)
    label_contrast(image, mask, label=2)           # (D, H, W) -> the label's contrast to its shell
    cjv(wm_values, gm_values); spectral_slope(power, modes)

Names are exported lazily (torch loads only when one is used).
"""

from __future__ import annotations

from synthkit._lazy import lazy_dir, lazy_getattr

_API: dict[str, str] = {
    "fid": "synthkit.metrics._fid",
    "frechet_distance": "synthkit.metrics._fid",
    "feature_stats": "synthkit.metrics._fid",
    "mmd": "synthkit.metrics._mmd",
    "ms_ssim": "synthkit.metrics._ms_ssim",
    "diversity": "synthkit.metrics._ms_ssim",
    "resolve_settings": "synthkit.metrics._ms_ssim",
    "MSSSIMSettings": "synthkit.metrics._ms_ssim",
    "prdc": "synthkit.metrics._prdc",
    "mse": "synthkit.metrics.paired",
    "mean_interval": "synthkit.metrics.bootstrap",
    "split_half_floor": "synthkit.metrics.bootstrap",
    "Extractor": "synthkit.metrics.extractors",
    "make_extractor": "synthkit.metrics.extractors",
    "load_set": "synthkit.metrics.evaluate",
    "write_report": "synthkit.metrics.report",
    "label_contrast": "synthkit.metrics.label_fidelity",
    "cjv": "synthkit.metrics.tissue",
    "log_spectral_distance": "synthkit.metrics.tissue",
    "spectral_slope": "synthkit.metrics.tissue",
    "tissue_profile": "synthkit.metrics.tissue",
    "write_controls": "synthkit.metrics.baselines",
}
_MODULES = {"medicalnet", "deepbet", "extractors", "features", "baselines", "reader_study", "paired",
            "bootstrap", "c2st", "evaluate", "report", "weights", "label_fidelity", "tissue", "consistency",
            "fidelity", "tables", "nnunet_segmenter"}

__all__ = [
    "Extractor",
    "MSSSIMSettings",
    "baselines",
    "bootstrap",
    "c2st",
    "cjv",
    "consistency",
    "deepbet",
    "diversity",
    "evaluate",
    "extractors",
    "feature_stats",
    "features",
    "fid",
    "fidelity",
    "frechet_distance",
    "label_contrast",
    "label_fidelity",
    "load_set",
    "log_spectral_distance",
    "make_extractor",
    "mean_interval",
    "medicalnet",
    "mmd",
    "ms_ssim",
    "mse",
    "nnunet_segmenter",
    "paired",
    "prdc",
    "reader_study",
    "report",
    "resolve_settings",
    "spectral_slope",
    "split_half_floor",
    "tables",
    "tissue",
    "tissue_profile",
    "weights",
    "write_controls",
    "write_report",
]


__getattr__ = lazy_getattr(__name__, _API, _MODULES)

__dir__ = lazy_dir(__all__)
