"""Paired metrics: a synthetic volume generated from a real case's mask is compared with that case.

Pairs are found by case id (``pair_by_case_id``) or given by a generation manifest
(``pairs_from_manifest``: ``{"items": [{"case_id": ..., "source_case": ...}]}`` or a list of such
records, see :func:`pairs_from_manifest`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import torch

__all__ = ["mse", "pair_by_case_id", "pairs_from_manifest"]


def mse(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error per item: ``(N, ...)`` x ``(N, ...)`` -> ``(N,)`` (float64 maths)."""
    if x.shape != y.shape:
        raise ValueError(f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    if x.ndim < 2:
        raise ValueError(f"expected a batch (N, ...), got shape {tuple(x.shape)}")
    out = torch.empty(x.shape[0], dtype=torch.float64)
    for i in range(x.shape[0]):  # one item at a time: float64 copies of a whole batch are large
        d = x[i].detach().double() - y[i].detach().double()
        out[i] = (d * d).mean()
    return out


_SUFFIX = re.compile(r"(_(s|sample|syn|synth)?\d+)$")


def pair_by_case_id(real_ids: Sequence[str], synth_ids: Sequence[str]) -> list[tuple[int, int]]:
    """Pairs ``(real_index, synth_index)``: a synthetic id pairs with the real case of the same id,
    or, failing that, of the id left after removing one trailing ``_<n>`` / ``_s<n>`` /
    ``_sample<n>`` / ``_syn<n>`` (several samples per mask). Unmatched synthetic cases are skipped."""
    index = {rid: i for i, rid in enumerate(real_ids)}
    pairs: list[tuple[int, int]] = []
    for j, sid in enumerate(synth_ids):
        if sid in index:
            pairs.append((index[sid], j))
            continue
        base = _SUFFIX.sub("", sid)
        if base != sid and base in index:
            pairs.append((index[base], j))
    return pairs


def pairs_from_manifest(
    manifest: str | Path, real_ids: Sequence[str], synth_ids: Sequence[str]
) -> list[tuple[int, int]]:
    """Pairs from a generation manifest (JSON). Accepted records (in ``manifest["items"]``,
    ``manifest["cases"]`` or a top-level list): synthkit's own (``synthkit.jobs.sample``:
    ``{"case": <mask case>, "k": <sample>, "images": ["imagesTr/<case>_s<k>_0000.nii.gz", ...]}``,
    synthetic id = the first image's name without channel suffix, else ``<case>_s<k>``), or dicts
    with a synthetic id under ``case_id`` / ``output`` / ``id`` and the real id under
    ``source_case`` / ``mask_case`` / ``source``."""
    data = json.loads(Path(manifest).read_text())
    records = data if isinstance(data, list) else data.get("items") or data.get("cases") or []
    real_index = {rid: i for i, rid in enumerate(real_ids)}
    synth_index = {sid: j for j, sid in enumerate(synth_ids)}
    pairs = []
    for rec in records:
        if not isinstance(rec, dict):
            continue
        sid = next((rec[k] for k in ("case_id", "output", "id") if k in rec), None)
        rid = next((rec[k] for k in ("source_case", "mask_case", "source") if k in rec), None)
        if rid is None and isinstance(rec.get("case"), str):
            rid = rec["case"]
            images = rec.get("images") or []
            if images and isinstance(images[0], str):
                name = Path(images[0]).name
                name = re.sub(r"\.nii(\.gz)?$", "", name)
                sid = re.sub(r"_\d{4}$", "", name)
            elif "k" in rec:
                sid = f"{rid}_s{rec['k']}"
        if isinstance(sid, str) and isinstance(rid, str) and sid in synth_index and rid in real_index:
            pairs.append((real_index[rid], synth_index[sid]))
    return pairs
