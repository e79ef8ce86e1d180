"""Which patient's mask each synthetic volume was made from, read from what synthkit wrote.

The linkage attack (:func:`synthkit.privacy.audit.attacks.linkage_attack`) needs, for each synthetic
case id, the id of its source case in the training cohort. :func:`read_links` understands:

* ``synthkit sample``'s ``manifest.json``: ``items[*].case`` (the mask's case) and ``k``; the
  synthetic case is ``{case}_s{k}``;
* ``synthkit augment``'s ``augment.json``: ``cases[*].case`` and ``source``, the *index* of the
  source case in the sorted cohort augment read (mapped here onto the training cohort's order,
  so give the same cohort); entries with ``real: true`` are copies of real cases, left out;
* an ``anonymize --mapping`` file: ``{"mapping": {input id (or "id#k"): output id}}`` (kept
  outside the shared folder: it IS the link);
* otherwise the naming ``{case}_s{k}`` itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from synthkit.errors import UsageError

_SAMPLE_NAME = re.compile(r"^(?P<case>.+)_s(?P<k>\d+)$")


def _load(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise UsageError(f"cannot read the synthetic->source links ({e})", path) from None


def links_from_document(doc: Any, train_ids: Sequence[str], path: Path) -> tuple[dict[str, str], str]:
    """``({synthetic id: source case id}, format name)`` of one parsed sidecar."""
    if not isinstance(doc, dict):
        raise UsageError("not a synthkit manifest, augment.json or anonymize mapping", path)
    if isinstance(doc.get("mapping"), dict):
        return {str(out): str(inp).split("#")[0] for inp, out in doc["mapping"].items()}, "anonymize mapping"
    if isinstance(doc.get("cases"), list) and any(isinstance(c, dict) and "source" in c for c in doc["cases"]):
        order = list(train_ids)
        links = {}
        for c in doc["cases"]:
            if isinstance(c, dict) and not c.get("real") and isinstance(c.get("source"), int) \
                    and 0 <= c["source"] < len(order):
                links[str(c["case"])] = order[c["source"]]
        return links, "augment.json (source indices in the training cohort's order)"
    if isinstance(doc.get("items"), list):
        links = {f"{e['case']}_s{int(e['k'])}": str(e["case"]) for e in doc["items"]
                 if isinstance(e, dict) and "case" in e and "k" in e}
        return links, "sample manifest.json"
    raise UsageError("not a synthkit manifest, augment.json or anonymize mapping (no items, cases or mapping)", path)


def read_links(synth_root: str | Path, synth_ids: Sequence[str], train_ids: Sequence[str],
               path: str | Path | None = None) -> tuple[dict[str, str], str]:
    """Synthetic id -> source case id, and where the links came from (see the module text).

    ``path``: a sidecar to read; default ``synth_root/manifest.json`` or ``augment.json`` when
    present, else the ``{case}_s{k}`` naming.
    """
    root = Path(synth_root)
    if path is None:
        for name in ("manifest.json", "augment.json"):
            if (root / name).is_file():
                doc = _load(root / name)
                if isinstance(doc, dict) and ("items" in doc or "cases" in doc):
                    try:
                        return links_from_document(doc, train_ids, root / name)
                    except UsageError:
                        continue
        links = {s: m.group("case") for s in synth_ids if (m := _SAMPLE_NAME.match(s))}
        return links, "case names {case}_s{k}"
    p = Path(path)
    return links_from_document(_load(p), train_ids, p)
