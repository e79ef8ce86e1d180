"""The evaluation pipeline behind ``synthkit evaluate``: real cohort vs one or more synthetic sets.

For each set (:func:`load_set`): read every case (a synthkit cohort or a plain folder of NIfTI
files), resize to the evaluation grid, keep a ``[0, 1]`` copy for MSE / MS-SSIM and extract
features once with the chosen extractor (:mod:`synthkit.metrics.extractors`; pretrained deepbet
by default), in batches, through a content-hash cache (:mod:`synthkit.metrics.features`).
Then (:func:`evaluate`) per synthetic set, against the real set:

* ``fid``: Fréchet distance of the features, bootstrap mean ± std and 95% interval; the
  real-vs-real split-half FID floor is reported once under ``real``;
* ``mmd``: squared MMD of the features, Gaussian kernel with bandwidths fixed from the *real*
  set's median pairwise distance (x 0.25, 0.5, 1, 2, 4) so every set is scored with the same
  kernel; unbiased estimator; bootstrap interval;
* ``prdc``: precision, recall, density and coverage (Naeem et al. 2020, k = 5) of the features,
  bootstrap intervals (:mod:`synthkit.metrics._prdc`);
* ``ms_ssim``: paired MS-SSIM (synthetic vs the real case whose mask generated it) when pairs
  exist; ``diversity``: mean MS-SSIM of random pairs within the set (the paper's MS-SSIM column;
  the real set's value is the reference row);
* ``mse``: paired mean squared error on the ``[0, 1]`` scale;
* optional ``c2st``: classifier two-sample test AUC (:mod:`synthkit.metrics.c2st`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from synthkit.errors import CohortError, SynthkitError, UsageError
from synthkit.metrics import features as feat
from synthkit.metrics import medicalnet
from synthkit.metrics._fid import fid
from synthkit.metrics._mmd import (
    DEFAULT_BANDWIDTH_FACTORS,
    gaussian_kernel,
    median_bandwidth,
    mmd_from_kernel,
)
from synthkit.metrics._ms_ssim import MSSSIMSettings, diversity, ms_ssim, resolve_settings
from synthkit.metrics._prdc import DEFAULT_K, distances, prdc_on_rows
from synthkit.metrics.bootstrap import (
    Interval,
    bootstrap,
    bootstrap_rows,
    mean_interval,
    split_half_floor,
)
from synthkit.metrics.extractors import RANDOM_WARNING, Extractor, make_extractor
from synthkit.metrics.fidelity import (
    CaseFidelity,
    FidelityOptions,
    case_fidelity,
    fidelity_metrics,
    mask_on_grid,
)
from synthkit.metrics.paired import mse, pair_by_case_id, pairs_from_manifest

__all__ = ["RANDOM_WARNING", "Extractor", "FidelityOptions", "LoadedSet", "evaluate", "grid_of", "list_cases",
           "load_set", "make_extractor"]


@dataclass
class LoadedSet:
    """One evaluated set: ``volumes[i]`` ``(C, D, H, W)`` in [0, 1] on the grid, ``features``
    ``(N, C*F)``; ``problems`` lists cases that could not be read (skipped)."""

    name: str
    ids: list[str]
    volumes: list[np.ndarray]
    features: np.ndarray
    masks: list[np.ndarray | None]
    grid: tuple[int, int, int]
    problems: list[str] = field(default_factory=list)
    root: Path | None = None
    fidelity: list[CaseFidelity] = field(default_factory=list)  # per case, when asked for
    segmenter_trained: bool | None = None  # real set: False when the label segmenter came from the cache


def list_cases(path: str | Path) -> list[tuple[str, tuple[Path, ...], Path | None]]:
    """``(case_id, image files, mask or None)`` for a cohort folder or a plain NIfTI folder."""
    from synthkit.io.cohort import discover_cohort
    from synthkit.io.nifti import is_nifti, strip_nifti_suffix

    root = Path(path)
    if not root.is_dir():
        raise UsageError("not found or not a folder", root)
    try:
        cohort = discover_cohort(root)
        out = [(c.case_id, c.images, c.mask) for c in cohort.cases if c.images]
        if out:
            return out
    except UsageError:
        pass
    files = sorted(p for p in root.iterdir() if p.is_file() and is_nifti(p))
    if not files:
        raise UsageError("no NIfTI volumes or cohort found in this folder", root)
    return [(strip_nifti_suffix(p.name), (p,), None) for p in files]


def _read(case_id: str, files: tuple[Path, ...]) -> Any:
    """The case's image as a Volume (``data (C, D, H, W)``, ``affine``)."""
    from synthkit.io.cohort import Case, read_image

    return read_image(Case(case_id, files, None))


def _content_hash(files: tuple[Path, ...]) -> str:
    import hashlib

    h = hashlib.sha256()
    for p in files:
        members = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())  # DICOM series
        for q in members:
            h.update(bytes.fromhex(medicalnet.sha256_file(q)))
    return h.hexdigest()


def grid_of(path: str | Path) -> tuple[int, int, int]:
    """Most common spatial shape among the readable volumes of a set (header-only read)."""
    import nibabel as nib

    shapes: Counter = Counter()
    for cid, files, _ in list_cases(path):
        try:
            if files[0].is_file():
                shapes[tuple(int(s) for s in nib.load(str(files[0])).shape[:3])] += 1
            else:  # DICOM series folder: read it
                shapes[tuple(_read(cid, files).data.shape[1:])] += 1
        except Exception:  # noqa: BLE001, S112 - unreadable: skipped here, reported by load_set
            continue
    if not shapes:
        raise CohortError("no readable volume", path)
    return shapes.most_common(1)[0][0]


class _Batcher:
    """Collects prepared volumes whose features are not cached and embeds them in batches."""

    def __init__(self, extractor: Extractor, cache: feat.FeatureCache, feats: list):
        self.extractor, self.cache, self.feats = extractor, cache, feats
        self.pending: list[tuple[int, str, np.ndarray]] = []

    def add(self, index: int, key: str, prepared: np.ndarray) -> None:
        if self.pending and self.pending[0][2].shape != prepared.shape:
            self.flush()
        self.pending.append((index, key, prepared))
        if len(self.pending) * prepared.shape[0] >= self.extractor.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        out = self.extractor.embed(np.stack([p for _, _, p in self.pending]))
        for (i, key, _), f in zip(self.pending, out):
            self.feats[i] = f
            self.cache.put(key, f)
        self.pending.clear()


def load_set(path: str | Path, extractor: Extractor, grid: Sequence[int] | None = None, *,
             name: str | None = None, cache_dir: Path | None = None, strict: bool = False,
             progress: Any = None, fidelity: FidelityOptions | None = None, external: Any = None,
             seed: int = 0) -> LoadedSet:
    """Read, resample, normalise and featurise one set (see the module docstring); with
    ``fidelity``, also keep what label fidelity and tissue realism need of each case
    (:func:`synthkit.metrics.fidelity.case_fidelity`; ``external``: a user's segmenter)."""
    root = Path(path)
    cases = list_cases(root)
    grid = tuple(grid) if grid is not None else grid_of(root)
    cache = feat.FeatureCache(cache_dir, extractor.ident, grid)
    label = name or root.name
    task = progress.add_task(f"features {label}", total=len(cases)) if progress is not None else None
    ids: list[str] = []
    vols: list[np.ndarray] = []
    feats: list[np.ndarray | None] = []
    masks: list[np.ndarray | None] = []
    cases_fid: list[CaseFidelity] = []
    problems: list[str] = []
    batcher = _Batcher(extractor, cache, feats)
    for cid, files, mask in cases:
        try:
            vol = _read(cid, files)
            content = _content_hash(files)
            key = cache.key(content)
            on_grid = feat.resize_to(vol.data, grid)
            cached = cache.get(key)
            prepared = extractor.prepare(on_grid, vol.affine) if cached is None else None
            m = mask_on_grid(mask, grid)
            if fidelity is not None:
                cases_fid.append(case_fidelity(on_grid, m, content, fidelity, seed=seed + len(ids),
                                               external=external, native=vol))
            ids.append(cid)
            vols.append(feat.unit_range(on_grid))
            feats.append(cached)
            masks.append(m)
            if prepared is not None:
                batcher.add(len(ids) - 1, key, prepared)
        except SynthkitError as e:
            if strict:
                raise
            problems.append(str(e))
        finally:
            if task is not None:
                progress.advance(task)
    batcher.flush()
    if not vols:
        why = f": {problems[0]}" if problems else ""
        raise CohortError(f"no readable volume in this folder{why}", root)
    chans = {v.shape[0] for v in vols}
    if len(chans) != 1 or len({f.shape[0] for f in feats}) != 1:
        raise CohortError(f"volumes have different channel counts {sorted(chans)}", root)
    return LoadedSet(label, ids, vols, np.stack(feats), masks, grid, problems, root,  # type: ignore[arg-type]
                     cases_fid)


def set_pairs(real: LoadedSet, synth: LoadedSet) -> list[tuple[int, int]]:
    manifest = synth.root / "manifest.json" if synth.root is not None else None
    if manifest is not None and manifest.is_file():
        try:
            pairs = pairs_from_manifest(manifest, real.ids, synth.ids)
            if pairs:
                return pairs
        except (OSError, ValueError, AttributeError):
            pass
    return pair_by_case_id(real.ids, synth.ids)


def _diversity(s: LoadedSet, settings: MSSSIMSettings, n_pairs: int, seed: int) -> Interval | None:
    if len(s.volumes) < 2:
        return None
    vals, _ = diversity([torch.from_numpy(v) for v in s.volumes], n_pairs=n_pairs, seed=seed, settings=settings)
    return mean_interval(vals, seed=seed)


def _paired(real: LoadedSet, s: LoadedSet, settings: MSSSIMSettings, seed: int) -> dict[str, Any]:
    pairs = set_pairs(real, s)
    row: dict[str, Any] = {"n_pairs": len(pairs), "mse": None, "ms_ssim": None}
    if pairs:
        errs, ss = [], []
        for c in range(0, len(pairs), 8):  # chunks: 100 pairs at 128^3 would be GBs at once
            x = torch.from_numpy(np.stack([real.volumes[i] for i, _ in pairs[c : c + 8]]))
            y = torch.from_numpy(np.stack([s.volumes[j] for _, j in pairs[c : c + 8]]))
            errs.append(mse(x, y).numpy())
            ss.append(ms_ssim(x, y, settings=settings).numpy())
        row["mse"] = mean_interval(np.concatenate(errs), seed=seed).to_dict()
        row["ms_ssim"] = mean_interval(np.concatenate(ss), seed=seed).to_dict()
    return row


def _feature_metrics(real_f: np.ndarray, synth_f: np.ndarray, bws: list[float], n_boot: int, seed: int,
                     k: int) -> dict[str, Any]:
    """FID, MMD (kernel of the pooled sample computed once) and PRDC (distances computed once),
    each with its bootstrap interval; replicates index into the precomputed matrices."""
    n, m = len(real_f), len(synth_f)
    if min(n, m) < 2:
        return {"fid": None, "mmd": None, "prdc": None}
    z = torch.from_numpy(np.concatenate([real_f, synth_f]).astype(np.float64))
    kern = gaussian_kernel(z, z, bws)

    def mmd_rows(ia: np.ndarray, ib: np.ndarray) -> float:
        return mmd_from_kernel(kern, torch.from_numpy(ia), torch.from_numpy(ib + n))

    out: dict[str, Any] = {
        "fid": bootstrap(fid, real_f, synth_f, n_boot, seed).to_dict(),
        "mmd": bootstrap(mmd_rows, np.arange(n), np.arange(m), n_boot, seed).to_dict(),
        "prdc": None,
    }
    if min(n, m) > k:
        d_rr, d_ff, d_rf = distances(real_f, synth_f)
        ivs = bootstrap_rows(lambda ia, ib: prdc_on_rows(d_rr, d_ff, d_rf, ia, ib, k), n, m, n_boot, seed)
        out["prdc"] = {"k": k, **{name: iv.to_dict() for name, iv in ivs.items()}}
    return out


def evaluate(real: LoadedSet, synths: Sequence[LoadedSet], extractor: Extractor, *, seed: int = 0,
             n_boot: int = 100, diversity_pairs: int = 100, c2st: bool = False, k: int = DEFAULT_K,
             progress: Any = None, fidelity: FidelityOptions | None = None, dataset_json: dict | None = None,
             cache_dir: Path | None = None, device: str = "cpu") -> dict[str, Any]:
    """All metrics for every synthetic set against ``real``; a JSON-ready dict (module docs).
    With ``fidelity`` (sets loaded with it too): label fidelity and tissue realism
    (:mod:`synthkit.metrics.fidelity`); label names from ``dataset_json``."""
    if len(real.volumes) < 2:
        raise UsageError("the real set needs at least 2 readable volumes", real.root)
    chans = real.volumes[0].shape[0]
    for s in synths:
        if s.volumes[0].shape[0] != chans:
            raise UsageError(f"set '{s.name}' has {s.volumes[0].shape[0]} channels, real has {chans}", s.root)
    settings = resolve_settings(real.grid, data_range=1.0)
    s0 = median_bandwidth(torch.from_numpy(real.features), torch.from_numpy(real.features))
    bws = [s0 * f for f in DEFAULT_BANDWIDTH_FACTORS]
    task = progress.add_task("metrics", total=1 + len(synths)) if progress is not None else None
    floor = split_half_floor(fid, real.features, repeats=10, seed=seed) if len(real.volumes) >= 4 else None
    real_div = _diversity(real, settings, diversity_pairs, seed)
    if task is not None:
        progress.advance(task)
    rows = []
    for i, s in enumerate(synths):
        row: dict[str, Any] = {"name": s.name, "n": len(s.volumes), "skipped": len(s.problems)}
        row.update(_feature_metrics(real.features, s.features, bws, n_boot, seed + i, k))
        row.update(_paired(real, s, settings, seed))
        div = _diversity(s, settings, diversity_pairs, seed)
        row["diversity"] = div.to_dict() if div else None
        if c2st:
            from synthkit.metrics.c2st import c2st as run_c2st

            row["c2st"] = run_c2st(np.stack(real.volumes), np.stack(s.volumes), seed=seed)
        rows.append(row)
        if task is not None:
            progress.advance(task)
    result = {
        "warning": RANDOM_WARNING if extractor.kind == "random" else None,
        "fid_comparable_to_published": extractor.kind == "medicalnet",
        "settings": _settings(extractor, real, settings, diversity_pairs, bws, n_boot, seed, k),
        "real": {"name": real.name, "n": len(real.volumes), "skipped": len(real.problems),
                 "fid_floor": floor.to_dict() if floor else None,
                 "diversity": real_div.to_dict() if real_div else None},
        "sets": rows,
        # counts only: the messages name input files (possibly patient ids), printed, never written
    }
    if fidelity is not None and real.fidelity and all(s.fidelity for s in synths):
        real_block, blocks = fidelity_metrics(real, synths, [set_pairs(real, s) for s in synths], fidelity,
                                              dataset_json=dataset_json, cache_dir=cache_dir, device=device,
                                              seed=seed, progress=progress)
        result["real"].update(real_block)
        for row, block in zip(rows, blocks):
            row.update(block)
        result["settings"]["fidelity"] = _fidelity_settings(fidelity, real)
    return result


def _fidelity_settings(opts: FidelityOptions, real: LoadedSet) -> dict[str, Any]:
    from synthkit.metrics.label_fidelity import SHELL_VOXELS
    from synthkit.metrics.tables import FIDELITY_RULES

    seg = ({"kind": "nnunet", "note": "the user's nnU-Net v2 model; real Dice is its Dice on the real set"}
           if opts.segmenter.startswith("nnunet:") else
           {"kind": "synthkit", **opts.seg.to_dict(), "cross_fitted": "two halves of the real set"})
    return {"contrast": f"(mean in label - mean in a {SHELL_VOXELS}-voxel shell) / sd of the enclosing region, "
                        "raw intensities on the evaluation grid; median over cases",
            "segmenter": seg, "tissue_patch": opts.patch_for(real.grid), "tissue_patches_per_case": opts.n_patches,
            "split_half_repeats": opts.repeats, "flags": FIDELITY_RULES}


def _settings(extractor: Extractor, real: LoadedSet, settings: MSSSIMSettings, diversity_pairs: int,
              bws: list[float], n_boot: int, seed: int, k: int) -> dict[str, Any]:
    return {
        "extractor": extractor.to_dict(),
        "preprocessing": extractor.prep_doc,
        "prep_version": extractor.prep_version,
        "grid": list(real.grid),
        "intensity_for_mse_ms_ssim": "per volume (v - min) / (p99.5 - min) clipped to [0, 1]",
        "ms_ssim": settings.to_dict(),
        "diversity_pairs": diversity_pairs,
        "mmd": {"kernel": "gaussian", "estimator": "unbiased MMD^2 on features", "bandwidths": bws,
                "bandwidth_rule": "median pairwise distance of real features x (0.25, 0.5, 1, 2, 4)"},
        "prdc": {"k": k, "distance": "Euclidean on features",
                 "reference": "Naeem et al. 2020; radii among distinct items in bootstrap replicates"},
        "bootstrap": {"n_boot": n_boot, "seed": seed, "ci": "percentile 95%"},
        "fid_note": "value = full-set FID; mean/std/ci95 from bootstrap replicates (biased upward)",
    }


def save_json(result: dict[str, Any], path: str | Path) -> Path:
    from synthkit.io.atomic import write_json

    return write_json(path, result)


def load_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())

