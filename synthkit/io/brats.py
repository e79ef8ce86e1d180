"""BraTS folder naming: ``{case}/{case}_{t1,t1ce,t2,flair,seg}.nii.gz``, or the BraTS 2023 names
``t1n, t1c, t2w, t2f`` (``_`` or ``-`` before the suffix). :func:`synthkit.io.cohort.discover_cohort`
turns what this finds into cases; channels are T1, T1ce, T2, FLAIR.
"""

from __future__ import annotations

import re
from pathlib import Path

from synthkit.io.nifti import is_nifti, strip_nifti_suffix

CHANNELS = ("T1", "T1ce", "T2", "FLAIR")
_ROLE = {
    "t1": "T1", "t1n": "T1", "t1ce": "T1ce", "t1c": "T1ce",
    "t2": "T2", "t2w": "T2", "flair": "FLAIR", "t2f": "FLAIR", "seg": "seg",
}
_SUFFIX_2023 = {"t1n", "t1c", "t2w", "t2f"}
_FILE_RE = re.compile(r"^(.+?)[_-](t1ce|t1n|t1c|t1|t2w|t2f|t2|flair|seg)$", re.IGNORECASE)
#: BraTS label values as stored in the files (2023 data store enhancing tumour as 3).
LABELS = {"background": 0, "necrotic core": 1, "edema": 2, "enhancing": 4}
LABELS_2023 = {"background": 0, "necrotic core": 1, "edema": 2, "enhancing": 3}


def _files(case_dir: Path) -> dict[str, list[Path]]:
    """Recognised files of one BraTS case folder by lower-case suffix (``t1``, ``seg``, ...)."""
    out: dict[str, list[Path]] = {}
    for p in sorted(case_dir.iterdir()):
        if p.is_file() and is_nifti(p):
            m = _FILE_RE.match(strip_nifti_suffix(p.name))
            if m:
                out.setdefault(m.group(2).lower(), []).append(p)
    return out


def case_dirs(root: Path) -> dict[Path, dict[str, list[Path]]]:
    """The sub-folders of ``root`` that hold BraTS-named files, with those files by suffix."""
    found = {}
    for d in sorted(root.iterdir()):
        if d.is_dir() and not d.name.startswith("."):
            files = _files(d)
            if files:
                found[d] = files
    return found


def is_2023(dirs: dict[Path, dict[str, list[Path]]]) -> bool:
    """Whether the cohort uses the BraTS 2023 file names."""
    return any(set(files) & _SUFFIX_2023 for files in dirs.values())


def case_files(d: Path, files: dict[str, list[Path]], is_2023: bool, need_images: bool
               ) -> tuple[tuple[Path, ...], Path | None, tuple[str, ...], tuple[Path, ...]]:
    """One case folder: (images in channel order, mask or None, problems, missing image paths)."""
    cid = d.name
    problems: list[str] = []
    by_role: dict[str, list[Path]] = {}
    for suffix, paths in files.items():
        by_role.setdefault(_ROLE[suffix], []).extend(paths)
    images, missing = [], []
    for ch in (*CHANNELS, "seg"):
        paths = by_role.get(ch, [])
        if len(paths) > 1:
            problems.append(f"several {ch} files: {', '.join(p.name for p in paths)}")
        if ch == "seg":
            continue
        if paths:
            images.append(paths[0])
        else:
            short = {"T1": "t1n", "T1ce": "t1c", "T2": "t2w", "FLAIR": "t2f"}[ch] if is_2023 else ch.lower()
            missing.append(d / f"{cid}{'-' if is_2023 else '_'}{short}.nii.gz")
            if need_images:
                problems.append(f"missing {ch} image")
    seg = by_role.get("seg", [])
    if not seg:
        problems.append("missing mask")
    return tuple(images), seg[0] if seg else None, tuple(problems), tuple(missing)
