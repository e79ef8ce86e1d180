"""A synthetic, shareable demo cohort built from the MNI152 template (no patient data).

:func:`write_demo_cohort` writes an nnU-Net raw dataset (``imagesTr/case_000_0000.nii.gz``,
``labelsTr/case_000.nii.gz``, ``dataset.json``) of T1-weighted whole-head volumes with brain
tumours. Each subject starts from nilearn's offline MNI152 T1 template and brain mask (2 mm):

* a **head** is built around the (skull-stripped) template: CSF rim, dark skull, bright scalp
  fat and skin, from the distance to the brain mask;
* a **tumour** is placed at a random position fully inside the brain: an irregular blob
  (a sphere whose radius is modulated by smooth noise) with a dark necrotic core, a bright
  enhancing rim, and a surrounding oedema of slightly lowered intensity;
* a random **affine** (rotation up to 10 degrees, per-axis scale 0.92-1.08, shift up to 6 mm)
  and a smooth **elastic** displacement (up to about 3 mm) move the head in the field of view;
* **intensity** varies: gamma, a smooth multiplicative bias field, Rician noise, and an
  arbitrary scanner scale.

Labels follow the paper: 0 background, 1 head (including brain and oedema: the oedema keeps
label 1 but is visibly darker), 2 tumour (core and enhancing rim). Output volumes are
``size^3`` voxels, isotropic, in RAS orientation, covering a 224 mm field of view centred on
the head. Every subject's randomness comes from ``numpy.random.default_rng([seed, index])``,
so the same seed gives identical arrays.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from synthkit.errors import UsageError

FOV_MM = 224.0
LABELS = {"background": 0, "head": 1, "tumour": 2}
_PAD = 8  # template voxels (2 mm) added around the template for scalp and skull


# ----------------------------------------------------------------------------- template


@functools.lru_cache(maxsize=1)
def _base() -> dict[str, np.ndarray]:
    """Padded MNI152 head at 2 mm: T1 (0..1), brain mask, head mask, brain depth, affine."""
    from nilearn import datasets

    t1_img = datasets.load_mni152_template(resolution=2)
    brain_img = datasets.load_mni152_brain_mask(resolution=2)
    t1 = np.pad(np.asarray(t1_img.get_fdata(), np.float32), _PAD)
    brain = np.pad(np.asarray(brain_img.get_fdata()) > 0.5, _PAD)
    brain = ndimage.binary_fill_holes(brain)
    affine = np.asarray(t1_img.affine, np.float64).copy()
    affine[:3, 3] -= affine[:3, :3] @ np.full(3, _PAD)

    # distance (in 2 mm voxels) outside the brain -> CSF, skull, scalp fat, skin, air
    out = ndimage.distance_transform_edt(~brain)
    outer = ndimage.gaussian_filter(out, 1.0)
    head_t1 = np.interp(
        outer,
        [0.0, 0.8, 1.3, 2.6, 3.2, 4.6, 5.2, 5.8],
        [0.3, 0.18, 0.08, 0.08, 0.85, 0.8, 0.45, 0.0],
    )
    t1 = np.where(brain, t1, head_t1.astype(np.float32))
    head = brain | (outer < 5.5)
    depth = ndimage.distance_transform_edt(brain)  # voxels to the brain surface
    return {"t1": t1, "brain": brain, "head": head, "depth": depth, "affine": affine}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Unit-variance smooth Gaussian noise of ``shape``."""
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma, mode="wrap")
    return field / (field.std() + 1e-8)


def _add_tumour(
    rng: np.random.Generator,
    t1: np.ndarray,
    labels: np.ndarray,
    brain: np.ndarray,
    depth: np.ndarray,
) -> None:
    """Insert one lesion in place (template space, 2 mm voxels); label 2 for core + rim."""
    radius = rng.uniform(5.0, 10.0)  # voxels: 10-20 mm
    oedema_extra = rng.uniform(3.0, 6.0)
    reach = radius * 1.4 + oedema_extra  # generous bound of the blob + oedema extent
    candidates = np.argwhere(depth > radius * 1.4 + 1.5)
    if len(candidates) == 0:
        raise RuntimeError("no room for a tumour inside the template brain")
    centre = candidates[rng.integers(len(candidates))].astype(np.float64) + rng.uniform(
        -0.5, 0.5, 3
    )
    half = int(np.ceil(reach)) + 2
    lo = np.maximum(np.floor(centre).astype(int) - half, 0)
    hi = np.minimum(np.floor(centre).astype(int) + half + 1, np.array(t1.shape))
    box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
    grid = np.stack(
        np.meshgrid(
            *[np.arange(a, b, dtype=np.float64) for a, b in zip(lo, hi, strict=True)], indexing="ij"
        )
    )
    axes = rng.uniform(0.8, 1.25, 3)
    d = np.sqrt((((grid - centre[:, None, None, None]) / axes[:, None, None, None]) ** 2).sum(0))
    shape = tuple(int(s) for s in hi - lo)
    wobble = 0.25 * _smooth_noise(rng, shape, sigma=radius / 2.5)
    rel = d / radius + wobble  # < 1 inside the lesion
    inside = brain[box]
    lesion = (rel < 1.0) & inside
    core_frac = rng.uniform(0.35, 0.7)
    core = rel < core_frac
    rim_soft = np.clip((rel - core_frac) / 0.12, 0, 1)  # 0 in core, 1 at and beyond rim start

    region = t1[box]
    wm = float(np.percentile(t1[brain], 90))
    oedema_w = np.clip(1.0 - (d - radius) / oedema_extra, 0, 1) * inside * (~lesion)
    oedema_w = ndimage.gaussian_filter(oedema_w.astype(np.float32), 1.0)
    region = region * (1.0 - rng.uniform(0.2, 0.35) * oedema_w)  # oedema: slightly darker (T1)
    rim_val = wm * rng.uniform(1.25, 1.5)
    core_val = wm * rng.uniform(0.2, 0.35)
    inner = np.where(core, core_val, core_val + (rim_val - core_val) * rim_soft)
    texture = 1.0 + 0.05 * _smooth_noise(rng, shape, sigma=1.0)
    region = np.where(lesion, inner * texture, region)
    t1[box] = region.astype(np.float32)
    labels[box][lesion] = 2


def _subject(rng: np.random.Generator, size: int, image: bool = True) -> tuple[Any, np.ndarray, np.ndarray, Any]:
    """One subject: image ``(size,)*3`` float32, labels uint8, output affine ``(4, 4)``, and the
    image without its Rician noise (same scale; for measuring the noise ceiling). ``image``
    False: the labels and affine only (the same arrays: no random draw before them is skipped;
    the image's resampling and intensity draws come after), images None."""
    base = _base()
    t1 = base["t1"].copy()
    # grey/white contrast differs between subjects (white-matter weight from the T1 itself)
    wm = np.clip((t1 - 0.45) / 0.35, 0.0, 1.0)
    t1 = np.where(base["brain"], t1 * (1.0 + rng.normal(0.0, 0.08) * (wm - 0.5)), t1)
    labels = base["head"].astype(np.uint8)
    _add_tumour(rng, t1, labels, base["brain"], base["depth"])

    # output grid: size^3 isotropic RAS voxels covering FOV_MM around the head centre
    spacing = FOV_MM / size
    head_idx = np.argwhere(base["head"])
    centre_vox = (head_idx.min(0) + head_idx.max(0)) / 2.0
    centre_world = base["affine"][:3, :3] @ centre_vox + base["affine"][:3, 3]
    out_aff = np.diag([spacing, spacing, spacing, 1.0])
    out_aff[:3, 3] = np.round(centre_world - spacing * (size - 1) / 2.0, 3)

    # random rigid+scale transform (world, about the head centre) and elastic displacement
    ang = np.deg2rad(rng.uniform(-10, 10, 3))
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rot = (
        np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    )
    lin = rot @ np.diag(rng.uniform(0.92, 1.08, 3))
    shift = rng.uniform(-6, 6, 3)
    # world point w of the output is taken from template world point lin^-1 (w - c - shift) + c
    inv_lin = np.linalg.inv(lin)
    pts = np.stack(np.meshgrid(*[np.arange(size, dtype=np.float64)] * 3, indexing="ij")).reshape(
        3, -1
    )
    world = out_aff[:3, :3] @ pts + out_aff[:3, 3:4]
    src_world = inv_lin @ (world - centre_world[:, None] - shift[:, None]) + centre_world[:, None]
    coarse = rng.normal(size=(3, 5, 5, 5)) * rng.uniform(1.0, 3.0)  # mm
    disp = np.stack(
        [ndimage.zoom(c, size / 5.0, order=3, mode="nearest", grid_mode=True) for c in coarse]
    )
    src_world = src_world + disp.reshape(3, -1)
    inv_base = np.linalg.inv(base["affine"])
    src_vox = inv_base[:3, :3] @ src_world + inv_base[:3, 3:4]

    lab = ndimage.map_coordinates(labels, src_vox, order=0, mode="constant", cval=0).reshape(
        (size,) * 3
    )
    if not image:
        return None, lab.astype(np.uint8), out_aff, None
    img = ndimage.map_coordinates(t1, src_vox, order=1, mode="constant", cval=0.0).reshape(
        (size,) * 3
    )

    # intensity: gamma, bias field, Rician noise, scanner scale
    img = np.clip(img, 0, None) ** np.exp(rng.normal(0, 0.12))
    coords = (pts.reshape(3, *(size,) * 3) / (size - 1)) * 2 - 1
    bias = (
        sum(rng.normal(0, 0.12) * coords[a] for a in range(3))
        + rng.normal(0, 0.06) * coords[0] * coords[1]
    )
    img = img * np.exp(bias)
    sigma = rng.uniform(0.01, 0.03)
    clean = img
    img = np.sqrt(
        (img + rng.normal(0, sigma, img.shape)) ** 2 + rng.normal(0, sigma, img.shape) ** 2
    )
    scale = rng.uniform(600, 1400)
    img = (img * scale).astype(np.float32)
    return img, lab.astype(np.uint8), out_aff, (clean * scale).astype(np.float32)


def demo_head(index: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The head of demo subject ``index`` (cohort ``seed``): a bool mask ``(size,)*3`` (tumour
    included) and its RAS affine. A head that belongs to no one, e.g. for the ``template`` mask
    operation (:mod:`synthkit.masks.template`)."""
    _img, lab, aff, _clean = _subject(np.random.default_rng([seed, index]), size, image=False)
    return lab > 0, aff


_CASE_FILE = re.compile(r"^case_(\d{3,})(_0000)?\.nii\.gz$")


def _clear_previous(out: Path, keep: range) -> None:
    """Allow writing over an earlier demo cohort (cases outside ``keep`` are removed), nothing else.

    Raises :class:`UsageError` when ``out`` holds anything a demo cohort would not.
    """
    if not out.exists():
        return
    if not out.is_dir():
        raise UsageError("exists and is not a folder", out)
    stale: list[Path] = []
    for p in out.iterdir():
        if p.name == "dataset.json" and p.is_file():
            continue
        if p.name in ("imagesTr", "labelsTr") and p.is_dir():
            for f in p.iterdir():
                m = _CASE_FILE.match(f.name)
                if not m or not f.is_file() or (p.name == "imagesTr") != bool(m.group(2)):
                    raise UsageError(
                        "folder is not empty and not a demo cohort; choose another", out
                    )
                if int(m.group(1)) not in keep:
                    stale.append(f)
            continue
        raise UsageError("folder is not empty and not a demo cohort; choose another", out)
    for f in stale:
        f.unlink()


#: Below this many voxels in total a demo cohort is written in one process.
PARALLEL_MIN_VOXELS = 8 * 96**3


def _workers(n: int, size: int) -> int:
    """Processes for writing a demo cohort: one per usable core (capped by $OMP_NUM_THREADS when
    set, so a job told to use one core does), and one for small cohorts (start-up would dominate)."""
    if n * size**3 < PARALLEL_MIN_VOXELS:
        return 1
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        cores = min(cores, int(os.environ.get("OMP_NUM_THREADS", cores)))
    except ValueError:
        pass
    return max(1, min(cores, n))


def _write_case(job: tuple[int, int, int, tuple[str, ...]]) -> None:
    """Render subject ``i`` of cohort ``seed`` at ``size`` and write it into each folder of
    ``outs`` (the noisy volume into the first, the noise-free one into the second)."""
    from synthkit.io.nifti import write_nifti

    seed, i, size, outs = job
    img, lab, aff, clean = _subject(np.random.default_rng([seed, i]), size)
    cid = f"case_{i:03d}"
    for o, im in zip(outs, (img, clean), strict=False):
        write_nifti(Path(o) / "imagesTr" / f"{cid}_0000.nii.gz", im, aff)
        write_nifti(Path(o) / "labelsTr" / f"{cid}.nii.gz", lab, aff, is_label=True)


def write_demo_cohort(
    out: str | Path,
    n: int = 20,
    size: int = 48,
    seed: int = 0,
    progress: Callable[[int, int], None] | Any = None,
    first: int = 0,
    clean_copy: str | Path | None = None,
):
    """Write ``n`` synthetic subjects as an nnU-Net raw dataset under ``out``; return the Cohort.

    Files: ``imagesTr/case_XXX_0000.nii.gz`` (T1, float32), ``labelsTr/case_XXX.nii.gz``
    (0 background, 1 head, 2 tumour), ``dataset.json``. Volumes are ``(size, size, size)`` at
    ``224 / size`` mm isotropic. ``progress``: ``None``, a callable ``(done, total)`` or a rich
    ``Progress``. Same ``seed`` -> identical arrays. ``first``: index of the first subject;
    subject ``i`` (``case_{i:03d}``) is the same in every cohort made with the same seed and
    size, so disjoint ranges give disjoint cohorts (training vs held-out). ``out`` may be an
    earlier demo cohort (overwritten; cases outside the new range removed); any other non-empty
    folder is a :class:`UsageError`. ``clean_copy``: also write the same cohort without the
    Rician noise there (same layout and labels; the noisy files are unchanged), to measure the
    noise ceiling of reconstruction metrics.
    """
    from synthkit.io.cohort import discover_cohort
    from synthkit.io.nnunet import write_nnunet_dataset_json

    if n < 1 or size < 8 or first < 0:
        raise ValueError("write_demo_cohort needs n >= 1, size >= 8 and first >= 0")
    out = Path(out)
    outs = [out] if clean_copy is None else [out, Path(clean_copy)]
    if len(outs) == 2 and outs[1].resolve() == out.resolve():
        raise UsageError("the clean copy must go to another folder", outs[1])
    for o in outs:
        _clear_previous(o, range(first, first + n))
        (o / "imagesTr").mkdir(parents=True, exist_ok=True)
        (o / "labelsTr").mkdir(parents=True, exist_ok=True)
    if progress is not None and hasattr(progress, "add_task"):
        task = progress.add_task("demo cohort", total=n)
        step = lambda i: progress.advance(task)
    elif progress is not None:
        step = lambda i: progress(i + 1, n)
    else:
        step = lambda i: None
    jobs = [(seed, i, size, tuple(str(o) for o in outs)) for i in range(first, first + n)]
    workers = _workers(n, size)
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn: the parent may hold torch's thread pool; the workers only need numpy and scipy
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            for k, _ in enumerate(pool.map(_write_case, jobs)):
                step(k)
    else:
        for k, job in enumerate(jobs):
            _write_case(job)
            step(k)
    for o in outs:
        write_nnunet_dataset_json(o, ("T1",), dict(LABELS), n, ".nii.gz")
    return discover_cohort(out)
