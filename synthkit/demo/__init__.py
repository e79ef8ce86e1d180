"""``synthkit demo``: the whole product on a synthetic demo cohort, as one HTML page.

:func:`run_demo` builds the MNI152 demo cohort, samples synthetic volumes with a model (the
shipped ``demo`` weights by default), writes a de-identified synthetic cohort through the
privacy gate, evaluates real vs synthetic vs trivial baselines, perturbs a few masks and
generates their images, and writes ``OUT/index.html`` tying it together:

* :mod:`~synthkit.demo.pipeline`: the stages, their sizes (:class:`DemoSizes`) and timings;
* :mod:`~synthkit.demo.figures`: the PNG pictures of the page;
* :mod:`~synthkit.demo.page`: the self-contained HTML page.

Submodules are imported on first use (nothing heavy at import time).
"""

from __future__ import annotations

from synthkit._lazy import lazy_getattr

_API = {
    "DemoSizes": "synthkit.demo.state",
    "QUICK": "synthkit.demo.state",
    "run_demo": "synthkit.demo.pipeline",
}

__all__ = ["QUICK", "DemoSizes", "run_demo"]


__getattr__ = lazy_getattr(__name__, _API)
