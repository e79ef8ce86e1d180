"""The privacy audit: is a synthetic volume a (near-)copy of a training *subject*, and can an
attacker tell who was trained on?

* :mod:`~synthkit.privacy.audit.check`: the memorization check (``MemorizationChecker``), built
  from :mod:`.memorization` (voxel similarity over shifts and a mirror), :mod:`.align` and
  :mod:`.identity` (residuals from the cohort's mean anatomy after affine alignment),
  :mod:`.features`, :mod:`.volumes` (volume sets, the result record), :mod:`.calibration` (the
  run-wide bounds) and :mod:`.planted` (the planted-copy self-test);
* :mod:`.attacks` (re-identification / linkage, loss-based membership inference), :mod:`.scores`
  and :mod:`.sources` (which training case a synthetic volume came from);
* :mod:`.reference_cache`: the training side of the check, kept by the cohorts' content;
* :mod:`.runner`: ``synthkit privacy`` as a library call (:func:`~.runner.audit`), and
  :mod:`.report`, its HTML report.
"""
