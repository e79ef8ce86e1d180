"""``synthkit export RUN --out DIR [--fp16]``: a run folder reduced to what sampling needs.

A training run folder holds resumable checkpoints (weights, EMA, optimizer state), a
preprocessing cache, previews and logs: hundreds of MB that nobody needs to sample. The export
keeps ``config.json``, the EMA weights ``model.safetensors`` and the small side files the
pipelines read (``intensity.json``, ``MODEL_CARD.md``, and ``train_cohort.json`` without the
local training-data path); a latent run keeps
its ``autoencoder/`` (config + weights). Autoencoder run folders (``synthkit autoencoder
train``) export the same way.

``half=True`` stores every floating tensor as float16 (half the size; loaded back into fp32).
A latent denoiser records the SHA-256 of the autoencoder weights it was trained on; when the
autoencoder is halved too, that record is rewritten to the new file's hash, and the export is
loaded once as a check before it is put in place. ``autoencoder=AE`` ships another autoencoder with
a latent run: only one whose encoder equals the run's value for value and whose scale factor is
the same (a decoder fine-tuned with ``synthkit autoencoder train --init --freeze-encoder``), so
the denoiser's latents mean what they meant in training. The output folder appears whole or not at all
(written into a temporary sibling, then renamed).
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import tempfile
from pathlib import Path

import torch

from synthkit.config import LATENT_AE_FOLDER
from synthkit.errors import CheckpointError, UsageError
from synthkit.io.atomic import _umask

__all__ = ["SIDE_FILES", "export_run"]

#: Small files a run folder may carry that sampling, the demo or a reader uses.
SIDE_FILES = ("intensity.json", "train_cohort.json", "MODEL_CARD.md")


def _write_weights(src: Path, dst: Path, half: bool, info_update: dict | None = None) -> None:
    from synthkit.runtime.checkpoint import read_weights, save_weights

    tensors, info = read_weights(src)
    if half:
        tensors = {k: v.half() if v.is_floating_point() else v for k, v in tensors.items()}
    if half or info_update:
        save_weights(dst, tensors, {**info, **(info_update or {}), **({"stored_as": "float16"} if half else {})})
    else:
        shutil.copy2(src, dst)


def _share_training_record(src: Path, dst: Path) -> None:
    """``train_cohort.json`` without its local ``path`` (a folder name can carry an identifier and
    means nothing elsewhere); a demo-cohort recipe and the case count are kept. Nothing is
    written when nothing is left (or the record is unreadable)."""
    try:
        doc = json.loads(src.read_text())
    except (OSError, ValueError):
        return
    if isinstance(doc, dict) and (kept := {k: v for k, v in doc.items() if k != "path"}):
        dst.write_text(json.dumps(kept, indent=2) + "\n")


def _kind(run_dir: Path) -> str:
    try:
        doc = json.loads((run_dir / "config.json").read_text())
    except FileNotFoundError:
        raise UsageError("not a run folder: config.json is missing", run_dir) from None
    except ValueError as e:
        raise UsageError(f"config.json is not valid JSON ({e})", run_dir / "config.json") from None
    if not isinstance(doc, dict):
        raise UsageError("config.json does not hold a run config", run_dir / "config.json")
    if doc.get("kind") == "autoencoder":
        return "autoencoder"
    return "latent" if doc.get("model_type") == "latent" else "run"


def _same_encoder(current: Path, new: Path) -> Path:
    """``new`` (an autoencoder run folder) after checking it can stand in for the latent run's
    autoencoder ``current``: same architecture (its decoder may also read the mask) and scale factor,
    encoder weights equal value for value (a decoder trained with ``--init --freeze-encoder``);
    UsageError naming what differs."""
    from synthkit.config import AutoencoderRunConfig

    if not (new / "config.json").is_file() or not (new / "model.safetensors").is_file():
        raise UsageError("--autoencoder: not an autoencoder run folder (config.json + model.safetensors)", new)
    a, b = AutoencoderRunConfig.load(current / "config.json"), AutoencoderRunConfig.load(new / "config.json")
    same = dataclasses.replace(b.autoencoder, mask_channels=a.autoencoder.mask_channels)  # the decoder may read the mask
    if same != a.autoencoder or a.scale_factor != b.scale_factor:
        raise UsageError("--autoencoder: its architecture or latent scale factor differs from the run's", new)
    from synthkit.runtime.checkpoint import read_weights

    wa, _ = read_weights(current / "model.safetensors")
    wb, _ = read_weights(new / "model.safetensors")
    enc = [k for k in wa if k.startswith("encoder.")]
    if not enc or any(k not in wb or not torch.equal(wa[k].float(), wb[k].float()) for k in enc):
        raise UsageError("--autoencoder: its encoder differs from the run's (train it with --init RUN/autoencoder "
                         "--freeze-encoder)", new)
    return new


def _export_into(src: Path, tmp: Path, half: bool, autoencoder: Path | None = None) -> str:
    from synthkit.io.hashing import file_sha256

    kind = _kind(src)
    if not (src / "model.safetensors").is_file():
        raise CheckpointError("run has no weights yet (model.safetensors is written at the first checkpoint)", src)
    shutil.copy2(src / "config.json", tmp / "config.json")
    for name in SIDE_FILES:
        if (src / name).is_file() and name != "train_cohort.json":
            shutil.copy2(src / name, tmp / name)
    _share_training_record(src / "train_cohort.json", tmp / "train_cohort.json")
    update = None
    if autoencoder is not None and kind != "latent":
        raise UsageError("--autoencoder replaces a latent run's decoder; this is not a latent run", src)
    if kind == "latent":
        ae_src, ae_dst = src / LATENT_AE_FOLDER, tmp / LATENT_AE_FOLDER
        if not (ae_src / "model.safetensors").is_file() or not (ae_src / "config.json").is_file():
            raise CheckpointError("the latent run has no autoencoder (autoencoder/config.json + model.safetensors)",
                                  ae_src)
        if autoencoder is not None:
            ae_src = _same_encoder(ae_src, Path(autoencoder))
            doc = json.loads((tmp / "config.json").read_text())
            doc["autoencoder"] = json.loads((ae_src / "config.json").read_text())
            (tmp / "config.json").write_text(json.dumps(doc, indent=2) + "\n")
        ae_dst.mkdir()
        shutil.copy2(ae_src / "config.json", ae_dst / "config.json")
        _write_weights(ae_src / "model.safetensors", ae_dst / "model.safetensors", half)
        if half or autoencoder is not None:  # the autoencoder file changed: record the new one's hash
            update = {"autoencoder_sha256": file_sha256(ae_dst / "model.safetensors")}
    _write_weights(src / "model.safetensors", tmp / "model.safetensors", half, update)
    return kind


def _check_loads(folder: Path, kind: str) -> None:
    """Load the export once (CheckpointError/ConfigError naming the file if it does not)."""
    if kind == "autoencoder":
        from synthkit.config import AutoencoderRunConfig
        from synthkit.networks.autoencoder import build_autoencoder
        from synthkit.runtime.checkpoint import check_state_dict, load_weights

        model = build_autoencoder(AutoencoderRunConfig.load(folder / "config.json").autoencoder)
        state = load_weights(folder / "model.safetensors")
        check_state_dict(model, state, folder / "model.safetensors", "autoencoder weights")
    else:
        from synthkit.pipeline.loading import load

        load(folder, "cpu")


def export_run(run: str | Path, out: str | Path, *, half: bool = False, autoencoder: str | Path | None = None) -> Path:
    """Write the shareable part of run folder ``run`` (a diffusion, GAN, latent or autoencoder
    run) to the new folder ``out``; ``half``: weights as float16; ``autoencoder``: for a latent
    run, an autoencoder with the same encoder (a fine-tuned decoder) to ship instead of the
    run's own copy. Returns ``out``."""
    src, out = Path(run), Path(out)
    if not src.is_dir():
        raise UsageError("no such run folder", src)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UsageError("exists and is not an empty folder; choose a new --out", out)
    if out.resolve() == src.resolve() or src.resolve() in out.resolve().parents:
        raise UsageError("--out must lie outside the run folder", out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        tmp.chmod(0o777 & ~_umask())
        kind = _export_into(src, tmp, half, None if autoencoder is None else Path(autoencoder))
        _check_loads(tmp, kind)
        if out.is_dir():
            out.rmdir()
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out
