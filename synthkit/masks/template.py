"""``template``: the patient's tumour in a head that is not the patient's.

A mask carries more than a tumour: its head outline is the patient's (for whole-head MRI, the
face profile), and a generator that follows its mask reproduces it. ``template`` keeps only
the tumour: the head/brain region is replaced by one drawn from a reference pool of heads that
belong to no patient of the cohort:

* by default the heads of synthkit's demo generator (:func:`synthkit.io.demo_cohort.demo_head`:
  the MNI152 template head under a random pose and warp), subject ``i`` of a pool of ``pool``
  drawn from the generator, built with cohort seed ``pool_seed`` (a constant unlikely to be
  used for a demo training cohort, whose heads would then be training heads);
* or the masks in a folder (``template:heads=DIR``; every ``*.nii[.gz]`` in DIR, else in
  DIR/labelsTr; all non-zero voxels are head).

The pool head is resampled onto the patient's grid through world coordinates (the context's
``affine``; RAS voxel axes of ``spacing`` when there is none): its centre of mass goes onto the
patient head's, scaled isotropically so that both heads have the same volume (``match_size``).
Every head voxel takes the patient's most frequent head label. The tumour (all tumour labels,
one object, or each component with ``per_component``) is then placed as ``move`` places it,
with a small random rotation and scaling: at its own place when it fits there inside the new
head, else (or always, with ``relocate``) at a new centre deep enough in the new head. Every
tumour voxel must lie inside the new head.

The new head is stored in the parameters (run-length encoded, within its bounding box), so a
replay needs only the original mask. ``head_source`` says which pool head was used (``demo:i``
or ``dir:i:<sha256 prefix>``; never a file name, which could name a patient).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from synthkit.masks.constraints import (
    ConstraintViolation,
    MaskOpError,
    check_input,
    check_result,
    tumour_of,
)
from synthkit.masks.geometry import bbox, centroid, components, rle_decode, rle_encode
from synthkit.masks.objects import (
    TransformOptions,
    depth_map,
    draw_transform,
    extract_objects,
    object_radius_mm,
    paste_object,
)
from synthkit.masks.params import ObjectTransform, Operation, OpParams, register

#: Cohort seed of the default demo head pool.
DEMO_POOL_SEED = 7_919_001
_DEMO_FOV_MM = 224.0
_HEAD_CACHE_FORMAT = 1


@dataclass(frozen=True, kw_only=True)
class TemplateParams(OpParams):
    """The new head (``head_rle`` over ``head_shape`` at ``head_offset``, filled with
    ``head_label``) and one :class:`ObjectTransform` per tumour object."""

    head_source: str
    head_offset: tuple[int, int, int]
    head_shape: tuple[int, int, int]
    head_rle: tuple[int, ...]
    head_label: int
    objects: tuple[ObjectTransform, ...]
    per_component: bool = False


@dataclass(frozen=True)
class TemplateOptions(TransformOptions):
    heads: str | None = None  # a folder of head masks; default: demo heads
    pool: int = 16
    pool_seed: int = DEMO_POOL_SEED
    match_size: bool = True
    relocate: bool = False
    per_component: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.pool < 1:
            raise ValueError("pool must be >= 1")


# --------------------------------------------------------------------------- the pool
@functools.lru_cache(maxsize=4 * TemplateOptions.pool)  # a pool head at 32^3 and at the patient's size, with room
def _demo_head(index: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`synthkit.io.demo_cohort.demo_head`, kept in memory and on disk (a 128^3 pool head
    costs ~2.5 CPU-s to build; see :func:`_head_cache_path`). The stored arrays are the computed
    ones, bit for bit; an unreadable entry is recomputed."""
    from synthkit.io.demo_cohort import demo_head

    path = _head_cache_path(index, size, seed)
    try:
        with np.load(path, allow_pickle=False) as z:
            head, affine = z["head"], z["affine"]
        if head.shape == (size,) * 3 and head.dtype == bool and affine.shape == (4, 4):
            return head, affine
    except (OSError, ValueError, KeyError):
        pass
    head, affine = demo_head(index, size, seed)
    _store_head(path, head, affine)
    return head, affine


def _head_cache_path(index: int, size: int, seed: int) -> Path:
    """``<synthkit cache>/template_heads/<key>.npz``: ``key`` hashes the pool head's (index, size,
    seed), the generator's source file and the numpy / scipy / nilearn versions (which fix its
    arithmetic and the MNI152 template it warps), so a changed generator never reads an old head.
    The folder follows synthkit's cache rule (``$SYNTHKIT_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/synthkit``, else ``~/.cache/synthkit``; as
    :func:`synthkit.metrics.features.default_cache_dir`, which this lower layer does not import)."""
    import json
    import os

    import nilearn
    import scipy

    from synthkit.io import demo_cohort

    if os.environ.get("SYNTHKIT_CACHE_DIR"):
        root = Path(os.environ["SYNTHKIT_CACHE_DIR"]).expanduser()
    elif os.environ.get("XDG_CACHE_HOME"):
        root = Path(os.environ["XDG_CACHE_HOME"]).expanduser() / "synthkit"
    else:
        root = Path.home() / ".cache" / "synthkit"
    h = hashlib.blake2b(Path(demo_cohort.__file__).read_bytes(), digest_size=16)
    h.update(json.dumps([_HEAD_CACHE_FORMAT, index, size, seed, np.__version__, scipy.__version__,
                         nilearn.__version__]).encode())
    return root / "template_heads" / f"{h.hexdigest()}.npz"


def _store_head(path: Path, head: np.ndarray, affine: np.ndarray) -> None:
    """Write a pool head to the cache (atomically); a failure to write is not an error."""
    import io

    from synthkit.io.atomic import write_bytes

    buf = io.BytesIO()
    np.savez_compressed(buf, head=np.asarray(head, bool), affine=np.asarray(affine, np.float64))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(path, buf.getvalue())
    except OSError:
        pass


def _head_files(folder: Path) -> list[Path]:
    from synthkit.io.nifti import is_nifti

    if not folder.is_dir():
        raise MaskOpError(f"template: heads folder {folder} not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and is_nifti(p))
    if not files and (folder / "labelsTr").is_dir():
        files = sorted(p for p in (folder / "labelsTr").iterdir() if p.is_file() and is_nifti(p))
    if not files:
        raise MaskOpError(f"template: no NIfTI head masks in {folder}")
    return files


def _pool_head(options: TemplateOptions, rng: np.random.Generator, patient_volume_mm3: float, min_spacing: float
               ) -> tuple[np.ndarray, np.ndarray, str]:
    """(head mask (bool, its own grid), its affine, source tag) drawn from the pool."""
    if options.heads:
        from synthkit.errors import SynthkitError
        from synthkit.io.nifti import read_nifti

        files = _head_files(Path(options.heads))
        i = int(rng.integers(len(files)))
        try:
            vol = read_nifti(files[i], is_label=True)
        except SynthkitError as e:
            raise MaskOpError(f"template: head mask #{i} unreadable ({e})") from None
        digest = hashlib.sha256(files[i].read_bytes()).hexdigest()[:12]
        return vol.data[0] != 0, vol.affine, f"dir:{i}:{digest}"
    i = int(rng.integers(options.pool))
    small, aff = _demo_head(i, 32, options.pool_seed)  # the pool head's size, to pick a resolution
    scale = (patient_volume_mm3 / max(small.sum() * abs(np.linalg.det(aff[:3, :3])), 1e-9)) ** (1 / 3)
    size = int(np.clip(np.ceil(_DEMO_FOV_MM * scale / max(min_spacing, 1e-6)), 32, 160))
    head, aff = (small, aff) if size == 32 else _demo_head(i, size, options.pool_seed)
    return head, aff, f"demo:{i}"


def resample_head(head: np.ndarray, head_affine: np.ndarray, patient: np.ndarray, affine: np.ndarray,
                  match_size: bool) -> np.ndarray:
    """``head`` (its own grid and affine) on the patient's grid (shape of ``patient``, (D, H, W)
    bool, and ``affine``): centres of mass on each other, volumes equal when ``match_size``."""
    from scipy import ndimage

    a, at = np.asarray(affine, np.float64), np.asarray(head_affine, np.float64)
    c_p = a[:3, :3] @ centroid(patient) + a[:3, 3]
    c_t = at[:3, :3] @ centroid(head) + at[:3, 3]
    s = 1.0
    if match_size:
        vp = patient.sum() * abs(np.linalg.det(a[:3, :3]))
        vt = head.sum() * abs(np.linalg.det(at[:3, :3]))
        s = float((vp / max(vt, 1e-9)) ** (1 / 3))
    pts = np.indices(patient.shape, dtype=np.float64).reshape(3, -1)
    world_t = c_t[:, None] + (a[:3, :3] @ pts + a[:3, 3:4] - c_p[:, None]) / s
    inv = np.linalg.inv(at)
    src = inv[:3, :3] @ world_t + inv[:3, 3:4]
    out = ndimage.map_coordinates(head.astype(np.float32), src, order=1, mode="constant", cval=0.0)
    return out.reshape(patient.shape) > 0.5


# --------------------------------------------------------------------------- the operation
def sample(labels: np.ndarray, ctx, rng: np.random.Generator, options: TemplateOptions) -> TemplateParams:
    base = ctx.base_fields(labels)
    region = np.isin(labels, ctx.roles.head + ctx.roles.tumour)
    heads_present = labels[np.isin(labels, ctx.roles.head)]
    if not heads_present.size:
        raise MaskOpError(f"template: no head/brain voxels (labels {list(ctx.roles.head)}) in the mask")
    objs = extract_objects(labels, ctx.roles.tumour, options.per_component)
    if not objs:
        raise MaskOpError(f"template: no tumour voxels (labels {list(ctx.roles.tumour)}) to keep")
    affine = np.diag([*ctx.spacing, 1.0]) if ctx.affine is None else np.asarray(ctx.affine, np.float64)
    volume = float(region.sum() * abs(np.linalg.det(affine[:3, :3])))
    head, head_aff, source = _pool_head(options, rng, volume, min(ctx.spacing))
    new_head = resample_head(head, head_aff, region, affine, options.match_size)
    if new_head.sum() < 0.5 * region.sum() / (1 if options.match_size else 8):
        raise ConstraintViolation(f"template: the pool head ({source}) falls mostly outside the field of view")
    depth = depth_map(new_head, ctx.spacing)
    transforms = []
    for (crop, c), own in zip(objs, _object_centres(labels, ctx.roles.tumour, options.per_component), strict=True):
        radius = object_radius_mm(crop, c, ctx.spacing)
        t = draw_transform(rng, options, depth, radius)  # rotation, scale, warp, and a centre that fits
        at = tuple(int(v) for v in np.clip(np.rint(own), 0, np.asarray(labels.shape) - 1))
        if not options.relocate and depth[at] >= radius * t.scale:  # its own place fits in the new head
            t = dataclasses.replace(t, center=tuple(float(v) for v in own))
        transforms.append(t)
    box = bbox(new_head)
    values, counts = np.unique(heads_present, return_counts=True)
    return TemplateParams(**base, head_source=source, head_offset=tuple(int(b.start) for b in box),
                          head_shape=tuple(int(b.stop - b.start) for b in box), head_rle=rle_encode(new_head[box]),
                          head_label=int(values[np.argmax(counts)]), objects=tuple(transforms),
                          per_component=options.per_component)


def _object_centres(labels: np.ndarray, tumour: tuple[int, ...], per_component: bool) -> list[np.ndarray]:
    """Each tumour object's centre of mass (voxels), in :func:`extract_objects`' order."""
    tum = np.isin(labels, tumour)
    if not per_component:
        return [centroid(tum)]
    lab, n = components(tum)
    return [centroid(lab == i) for i in range(1, n + 1)]


def head_of(params: TemplateParams) -> np.ndarray:
    """The new head region (D, H, W) bool stored in ``params``."""
    try:
        crop = rle_decode(params.head_rle, params.head_shape).astype(bool)
    except ValueError as e:
        raise MaskOpError(f"template: bad head data ({e})") from None
    out = np.zeros(params.shape, dtype=bool)
    lo = np.asarray(params.head_offset)
    hi = lo + np.asarray(params.head_shape)
    if np.any(lo < 0) or np.any(hi > np.asarray(params.shape)):
        raise MaskOpError("template: the stored head does not fit the grid")
    out[tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))] = crop
    return out


def apply(labels: np.ndarray, params: TemplateParams) -> np.ndarray:
    """Deterministic: (D, H, W) labels -> (D, H, W) labels: the stored head with the tumour placed in it."""
    check_input(labels, params)
    objs = extract_objects(labels, params.tumour_labels, params.per_component)
    if not objs:
        raise MaskOpError(f"template: no tumour voxels (labels {list(params.tumour_labels)})")
    if len(objs) != len(params.objects):
        raise MaskOpError(f"template: the mask has {len(objs)} tumour objects, the parameters {len(params.objects)}")
    head = head_of(params)
    out = np.where(head, params.head_label, 0).astype(labels.dtype)
    expected = 0.0
    for (crop, c), t in zip(objs, params.objects, strict=True):
        out = paste_object(out, crop, c, params.spacing, params.spacing, t)
        expected += np.count_nonzero(crop) * t.scale**3
    check_result(labels, out, params, expected_tumour_voxels=expected, inside=head, what="template")
    if not tumour_of(out, params).any():
        raise ConstraintViolation("template: the tumour vanished")
    return out


OPERATION = register(Operation("template", TemplateParams, TemplateOptions, sample, apply,
                               "the tumour in a head from a reference pool (not the patient's)"))
