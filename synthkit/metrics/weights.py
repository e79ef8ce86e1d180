"""Downloadable feature-network weights, verified: ``synthkit weights fetch NAME`` / ``list``.

MedicalNet (Chen, Ma & Zheng 2019) ResNet-10/18/34/50 pretrained on 23 datasets, from the
TencentMedicalNet Hugging Face repositories (the files MONAI's ``resnet.py`` downloads), through
:func:`huggingface_hub.hf_hub_download` into ``<cache>/weights/<name>/<file>`` (``<cache>`` as for
the feature cache: ``$SYNTHKIT_CACHE_DIR``, ``$XDG_CACHE_HOME/synthkit`` or ``~/.cache/synthkit``).

Every file is checked against a pinned SHA-256 before it enters the cache: the download goes to a
temporary folder inside the cache, a file whose hash differs is deleted there and the fetch fails
with one line; only a verified file is renamed into place. ``cached_weights`` checks the hash again
whenever the file is used. The pinned values and where each was cross-checked are in
:data:`REGISTRY` (``sources``): a Hugging Face LFS blob is stored under its SHA-256, so a cache
path ``models--TencentMedicalNet--MedicalNet-ResnetN/blobs/<sha256>`` in another project confirms
the value independently of any manifest. An entry without a trustworthy pin would carry
``sha256=None``: it is then fetched only with an explicit ``--sha256 HEX``, recorded next to the
file as ``<file>.sha256``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from synthkit.errors import CheckpointError, UsageError
from synthkit.metrics.features import default_cache_dir
from synthkit.metrics.medicalnet import sha256_file

__all__ = ["REGISTRY", "WeightsEntry", "cached_weights", "fetch", "list_entries", "weights_dir"]

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class WeightsEntry:
    """One downloadable file: where it lives on the Hub and the SHA-256 it must have."""

    name: str
    repo_id: str
    filename: str
    sha256: str | None
    depth: int
    revision: str = "main"
    sources: tuple[str, ...] = ()

    @property
    def pinned(self) -> bool:
        return self.sha256 is not None


_MEDMETRIC = "medmetric (yasinzaii/medmetric) medicalnet.yaml manifest"
REGISTRY: dict[str, WeightsEntry] = {
    "medicalnet-resnet10": WeightsEntry(
        "medicalnet-resnet10", "TencentMedicalNet/MedicalNet-Resnet10", "resnet_10_23dataset.pth",
        "afa8055f3e47f4a18239495d92a7abc587902c69c31c743de2b2784653b72605", 10,
        sources=(_MEDMETRIC, "HF cache blob path in a MediSwarm build script", "3 further projects pinning it")),
    "medicalnet-resnet18": WeightsEntry(
        "medicalnet-resnet18", "TencentMedicalNet/MedicalNet-Resnet18", "resnet_18_23dataset.pth",
        "61224f9317fcce873366deb3703183e92cc47325b726b69691b33536244e10f4", 18,
        sources=(_MEDMETRIC, "HF cache blob path in a MediSwarm build script", "2 further projects pinning it")),
    "medicalnet-resnet34": WeightsEntry(
        "medicalnet-resnet34", "TencentMedicalNet/MedicalNet-Resnet34", "resnet_34_23dataset.pth",
        "3ea7188e396774e4ef95b66e5e90a78273bb33f6e58d3d717bf24f5f1aaeaa28", 34,
        sources=(_MEDMETRIC,)),
    "medicalnet-resnet50": WeightsEntry(
        "medicalnet-resnet50", "TencentMedicalNet/MedicalNet-Resnet50", "resnet_50_23dataset.pth",
        "ff48a62219073fb977fd3f4ddfb8dc1367f0ec156c8d6f6c37e205bd683a246e", 50,
        sources=(_MEDMETRIC, "a project pinning the official archive's member")),
}


def weights_dir() -> Path:
    """``<cache>/weights``."""
    return default_cache_dir() / "weights"


def _entry(name: str) -> WeightsEntry:
    key = name.strip().lower()
    if key not in REGISTRY:
        raise UsageError(f"unknown weights {name!r}; known: {', '.join(sorted(REGISTRY))} (see 'synthkit weights list')")
    return REGISTRY[key]


def _path(entry: WeightsEntry) -> Path:
    return weights_dir() / entry.name / entry.filename


def _expected(entry: WeightsEntry, path: Path) -> str | None:
    if entry.sha256 is not None:
        return entry.sha256
    side = path.with_name(path.name + ".sha256")
    return side.read_text().strip() if side.is_file() else None


def cached_weights(name: str) -> Path:
    """The verified cached file of ``name``.

    Raises:
        UsageError: not fetched yet (says which command fetches it).
        CheckpointError: the cached file's SHA-256 no longer matches.
    """
    entry = _entry(name)
    path = _path(entry)
    if not path.is_file():
        raise UsageError(f"{entry.name} weights are not in the cache ({path}); fetch them with: "
                         f"synthkit weights fetch {entry.name}")
    digest, expected = sha256_file(path), _expected(entry, path)
    if digest != expected:
        raise CheckpointError(f"cached {entry.name} weights have SHA-256 {digest}, expected {expected}; "
                              f"delete the file and run: synthkit weights fetch {entry.name}", path)
    return path


def _check_hex(value: str) -> str:
    v = value.strip().lower()
    if not _HEX64.match(v):
        raise UsageError(f"--sha256 must be 64 hexadecimal characters, got {value!r}")
    return v


def _download(entry: WeightsEntry, into: Path, endpoint: str | None, quiet: bool) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.utils import disable_progress_bars, enable_progress_bars

    if quiet:
        disable_progress_bars()
    try:
        return Path(hf_hub_download(entry.repo_id, entry.filename, revision=entry.revision,
                                    local_dir=into, endpoint=endpoint))
    except Exception as e:  # noqa: BLE001 - network / hub errors are one line for the user
        where = endpoint or "https://huggingface.co"
        msg = " ".join(str(e).split())[:300]
        raise UsageError(f"{entry.name}: cannot download {entry.repo_id}/{entry.filename} from {where} "
                         f"({type(e).__name__}: {msg})") from None
    finally:
        if quiet:
            enable_progress_bars()


def fetch(name: str, *, endpoint: str | None = None, sha256: str | None = None, quiet: bool = False) -> Path:
    """Download ``name`` into the cache, verified; returns the cached path (no download when a
    verified copy is already there).

    Raises:
        UsageError: unknown name, unpinned entry without ``sha256``, ``sha256`` contradicting the
            pin, download failure.
        CheckpointError: the downloaded file's SHA-256 differs (the file is removed).
    """
    entry = _entry(name)
    given = _check_hex(sha256) if sha256 is not None else None
    if entry.sha256 is not None and given is not None and given != entry.sha256:
        raise UsageError(f"--sha256 {given[:16]}... contradicts the pinned SHA-256 of {entry.name} "
                         f"({entry.sha256[:16]}...)")
    expected = entry.sha256 or given
    if expected is None:
        raise UsageError(f"{entry.name} has no pinned SHA-256 (no trustworthy published value); "
                         "pass --sha256 HEX with the value you have verified yourself")
    dest = _path(entry)
    if dest.is_file() and sha256_file(dest) == expected:
        return dest
    root = weights_dir()
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=root))
    try:
        got = _download(entry, tmp, endpoint, quiet)
        digest = sha256_file(got)
        if digest != expected:
            got.unlink(missing_ok=True)
            raise CheckpointError(f"{entry.name}: downloaded {entry.filename} has SHA-256 {digest}, expected "
                                  f"{expected}: refused and removed")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if entry.sha256 is None:
            (tmp / "sha256").write_text(expected + "\n")
            os.replace(tmp / "sha256", dest.with_name(dest.name + ".sha256"))
        os.replace(got, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        for d in (dest.parent, root):
            try:
                d.rmdir()  # only if empty: a failed first fetch leaves no trace
            except OSError:
                pass
    return dest


def list_entries() -> list[dict[str, Any]]:
    """One dict per registry entry: name, repo, file, SHA-256 (or None), sources, cached path."""
    out = []
    for e in REGISTRY.values():
        path = _path(e)
        out.append({"name": e.name, "repo_id": e.repo_id, "filename": e.filename, "revision": e.revision,
                    "sha256": e.sha256, "pinned": e.pinned, "sources": list(e.sources), "depth": e.depth,
                    "cached": str(path) if path.is_file() else None})
    return out
