"""Privacy: the audit (identity-level memorization, attacks, calibration), de-identification,
and the anonymize gate.

* :mod:`synthkit.privacy.audit`: the memorization check, the attacks, their calibration,
  ``synthkit privacy`` as a call (:func:`synthkit.privacy.audit.runner.audit`);
* :mod:`synthkit.privacy.deid`: fresh ids, scrubbed NIfTI, DICOM export, the identifier scan;
* :mod:`synthkit.privacy.gate` (and :mod:`~synthkit.privacy.gate_report`): what ``synthkit
  anonymize`` (:mod:`synthkit.jobs.anonymize`) checks every generated volume against, calling the
  audit, and the attacks and shareable report on what it made.

Names are imported lazily (importing ``synthkit.privacy`` does not import torch)::

    from synthkit.privacy import MemorizationChecker, scan_for_identifiers
    from synthkit.privacy.audit.runner import audit     # `synthkit privacy` as a call
    from synthkit.jobs.anonymize import anonymize       # `synthkit anonymize` as a call
    result, pairs = audit("data/train", "synthetic/", holdout="data/holdout")
"""

from __future__ import annotations

from synthkit._lazy import lazy_dir, lazy_getattr

_API: dict[str, str] = {
    "CheckSettings": "synthkit.privacy.audit.check",
    "MemorizationChecker": "synthkit.privacy.audit.check",
    "PrivacyResult": "synthkit.privacy.audit.volumes",
    "prepare_set": "synthkit.privacy.audit.volumes",
    "write_report": "synthkit.privacy.audit.report",
    "linkage_attack": "synthkit.privacy.audit.attacks",
    "membership_attack": "synthkit.privacy.audit.attacks",
    "DenoisingError": "synthkit.privacy.audit.attacks",
    "closer_to_train": "synthkit.privacy.audit.scores",
    "membership_inference_auc": "synthkit.privacy.audit.scores",
    "fresh_case_ids": "synthkit.privacy.deid.outputs",
    "write_deidentified_nifti": "synthkit.privacy.deid.outputs",
    "nifti_header_problems": "synthkit.privacy.deid.outputs",
    "canonical_affine": "synthkit.privacy.deid.outputs",
    "write_dicom_series": "synthkit.privacy.deid.dicom_export",
    "value_mapping": "synthkit.privacy.deid.dicom_export",
    "scan_for_identifiers": "synthkit.privacy.deid.identifiers",
    "identifier_needles": "synthkit.privacy.deid.identifiers",
}

__all__ = sorted(_API)  # noqa: PLE0605  (lazy exports, as synthkit/__init__.py)


__getattr__ = lazy_getattr(__name__, _API)

__dir__ = lazy_dir(__all__)
