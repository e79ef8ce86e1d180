"""Privacy: memorization checks, de-identification, and the anonymize pipeline.

Names are imported lazily (importing ``synthkit.privacy`` does not import torch)::

    from synthkit.privacy import MemorizationChecker, scan_for_identifiers
    from synthkit.privacy.audit import audit            # `synthkit privacy` as a call
    from synthkit.privacy.anonymize import anonymize    # `synthkit anonymize` as a call
    result, pairs = audit("data/train", "synthetic/", holdout="data/holdout")
"""

from __future__ import annotations

from synthkit._lazy import lazy_getattr

_API: dict[str, str] = {
    "CheckSettings": "synthkit.privacy.check",
    "MemorizationChecker": "synthkit.privacy.check",
    "PrivacyResult": "synthkit.privacy.check",
    "prepare_set": "synthkit.privacy.check",
    "write_report": "synthkit.privacy.report",
    "AnonymizeSettings": "synthkit.privacy.anonymize",
    "fresh_case_ids": "synthkit.privacy.deid",
    "write_deidentified_nifti": "synthkit.privacy.deid",
    "write_dicom_series": "synthkit.privacy.deid",
    "nifti_header_problems": "synthkit.privacy.deid",
    "scan_for_identifiers": "synthkit.privacy.deid",
    "identifier_needles": "synthkit.privacy.deid",
    "canonical_affine": "synthkit.privacy.deid",
    "value_mapping": "synthkit.privacy.deid",
    "linkage_attack": "synthkit.privacy.attacks",
    "membership_attack": "synthkit.privacy.attacks",
    "DenoisingError": "synthkit.privacy.attacks",
    "closer_to_train": "synthkit.privacy.scores",
    "membership_inference_auc": "synthkit.privacy.scores",
}

__all__ = sorted(_API)  # noqa: PLE0605  (lazy exports, as synthkit/__init__.py)


__getattr__ = lazy_getattr(__name__, _API)


def __dir__() -> list[str]:
    return __all__
