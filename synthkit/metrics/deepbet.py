"""Pretrained 3D brain-MRI features offline: the encoder of deepbet's LinkNet3d.

deepbet (Fisch et al., "deepbet: Fast brain extraction of T1-weighted MRI using Convolutional
Neural Networks", Computers in Biology and Medicine 2024; github.com/wwu-mmll/deepbet, MIT) ships
two TorchScript LinkNet3d networks (2.1 M parameters each) trained for brain extraction on
T1-weighted MRI of many sites, inside its wheel as ``data/models/bbox_model.pt`` (whole head at
128^3) and ``data/models/model.pt`` (brain bounding box at 256^3). synthkit uses the *encoder*
of ``bbox_model.pt``, which sees whole heads as the evaluated volumes are.

Loading is safe and offline. synthkit ships the encoder's tensors, extracted unchanged from
deepbet 1.0.2's ``bbox_model.pt`` (MIT licence; see NOTICE), as
``synthkit/assets/features/deepbet_encoder.safetensors`` (:data:`ENCODER_ASSET`, its own SHA-256
pinned), so ``pip install synthkit-med`` alone gives the default extractor without deepbet's GUI
dependencies. Without the asset, the file of an installed deepbet wheel is used: located through
the distribution's record (``importlib.metadata``; deepbet itself is never imported), its SHA-256
must equal the value pinned here for deepbet 1.0.2, and the tensors are read by
:mod:`synthkit.metrics._torchscript` (no TorchScript code is compiled or run). Either way the
encoder is rebuilt here (parameter names as in the archive), loaded strictly, and identified by
the SHA-256 of ``bbox_model.pt`` (the same tensors give the same features and cache keys).

Encoder (LinkNet, Chaurasia & Culurciello 2017, in 3D; every conv ``bias=False``, every
``InstanceNorm3d`` without affine, eps 1e-5, input statistics):

* ``init``: ``Conv3d(1, 16, 7, stride 2, padding 3)`` -> IN -> ReLU -> ``MaxPool3d(3, 2, 1)``;
* ``down0`` (16 -> 16), ``down1`` (16 -> 32), ``down2`` (32 -> 64), ``down3`` (64 -> 128): two
  residual blocks each, ``relu(IN(conv3(relu(IN(conv3(x))))) + skip)``; in down1-3 the first
  block's first conv has stride 2 and its skip is ``IN(Conv3d(cin, cout, 1, stride 2))``.

Features (:class:`DeepBetEncoder`): the global average of each of the five stage outputs,
concatenated, ``(N, 1, 128, 128, 128) -> (N, 16 + 16 + 32 + 64 + 128 = 256)``.

Preprocessing (:func:`prepare`), as deepbet's ``BrainExtraction.run_model`` does for this
network: the volume in closest-canonical (RAS) orientation, resized to 128^3 with
``nearest-exact`` interpolation; ``low, high`` = its 0.5% / 99.5% quantiles;
``x = clamp((x - low) / (high - low), 0, 1)``, z-scored over the whole volume (unbiased std),
then ``0.226 x + 0.449``.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from synthkit.errors import CheckpointError, UsageError
from synthkit.io.hashing import file_sha256 as _sha256
from synthkit.preprocess.grid import to_ras

__all__ = [
    "DEEPBET_VERSION",
    "FEATURE_DIM",
    "INPUT_SHAPE",
    "MODEL_FILE",
    "PINNED_SHA256",
    "PREP_DOC",
    "DeepBetEncoder",
    "load",
    "locate",
    "prepare",
    "to_canonical",
]

DEEPBET_VERSION = "1.0.2"
MODEL_FILE = "data/models/bbox_model.pt"
#: SHA-256 of deepbet 1.0.2's model files (equal to the hashes in the wheel's RECORD).
PINNED_SHA256 = {
    "data/models/bbox_model.pt": "39a7b2b5f799faa1391ea97bfcdc0b9299f20d84f2316a4ff8918dc4685e40aa",
    "data/models/model.pt": "de8ee7c69654d0dd3935dc4a5d84571d8ecf4637a6bfc01df399c4c2bc86e0fd",
}
INPUT_SHAPE = (128, 128, 128)
STAGES = (("init", 1, 16), ("down0", 16, 16), ("down1", 16, 32), ("down2", 32, 64), ("down3", 64, 128))
FEATURE_DIM = sum(c for _, _, c in STAGES)
PREP_DOC = ("deepbet: closest-canonical (RAS) orientation, nearest-exact resize to 128^3, "
            "clamp((x - q0.5%) / (q99.5% - q0.5%), 0, 1), z-score, 0.226 x + 0.449")
INSTALL_HINT = f'install it with: pip install --no-deps "deepbet=={DEEPBET_VERSION}"'
#: The encoder tensors of bbox_model.pt shipped with synthkit (see the module docstring).
ENCODER_ASSET = Path(__file__).resolve().parent.parent / "assets" / "features" / "deepbet_encoder.safetensors"
ENCODER_ASSET_SHA256 = "d3a4efdc5db0443e8d1a6338a7c70b62c1c8e1491663fa406c5a6aafcbfc8161"


def _norm(x: torch.Tensor) -> torch.Tensor:
    return F.instance_norm(x, eps=1e-5)


class _Block(nn.Module):
    """Residual block; ``double_conv.0`` / ``.3`` and ``downsample.0`` as in the archive."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.double_conv = nn.ModuleDict({
            "0": nn.Conv3d(cin, cout, 3, stride=stride, padding=1, bias=False),
            "3": nn.Conv3d(cout, cout, 3, padding=1, bias=False),
        })
        self.downsample = (nn.ModuleDict({"0": nn.Conv3d(cin, cout, 1, stride=stride, bias=False)})
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _norm(self.double_conv["3"](F.relu(_norm(self.double_conv["0"](x)))))
        skip = x if self.downsample is None else _norm(self.downsample["0"](x))
        return F.relu(y + skip)


class _Down(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.block1 = _Block(cin, cout, stride)
        self.block2 = _Block(cout, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x))


class DeepBetEncoder(nn.Module):
    """deepbet's LinkNet3d encoder as a feature extractor: ``(N, 1, D, H, W) -> (N, 256)``.

    Any spatial size works (the stages downsample by 32 in total); the pretrained network was
    trained at 128^3 (see :func:`prepare`). :meth:`stages` gives the five feature maps.
    """

    out_features = FEATURE_DIM

    def __init__(self) -> None:
        super().__init__()
        self.init = nn.ModuleDict({"0": nn.Conv3d(1, 16, 7, stride=2, padding=3, bias=False)})
        for i, (name, cin, cout) in enumerate(STAGES[1:]):
            setattr(self, name, _Down(cin, cout, 1 if i == 0 else 2))

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The outputs of ``init``, ``down0`` .. ``down3`` for ``x (N, 1, D, H, W)``."""
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"deepbet encoder expects (N, 1, D, H, W), got {tuple(x.shape)}")
        h = F.max_pool3d(F.relu(_norm(self.init["0"](x))), 3, stride=2, padding=1)
        out = [h]
        for name, _, _ in STAGES[1:]:
            h = getattr(self, name)(h)
            out.append(h)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenated global-average-pooled stage outputs ``(N, 256)``."""
        return torch.cat([s.mean(dim=(2, 3, 4)) for s in self.stages(x)], dim=1)


def locate(file: str = MODEL_FILE) -> Path:
    """Path of a model file of the installed deepbet wheel (deepbet itself is not imported).

    Raises:
        UsageError: deepbet is not installed, or the file is not part of it.
    """
    try:
        dist = metadata.distribution("deepbet")
    except metadata.PackageNotFoundError:
        raise UsageError(f"the pretrained features need the deepbet package; {INSTALL_HINT} "
                         "(or choose --features random / medicalnet-resnetN)") from None
    path = Path(str(dist.locate_file(file)))
    if not path.is_file():
        raise UsageError(f"deepbet {dist.version} is installed but has no {file}; {INSTALL_HINT}")
    return path


def load(path: str | Path | None = None, file: str = MODEL_FILE) -> tuple[DeepBetEncoder, str]:
    """The pretrained encoder (eval mode) and the SHA-256 of the file it came from.

    ``path`` defaults to the installed wheel's ``file``; either way its hash must equal
    :data:`PINNED_SHA256` ``[file]``.

    Raises:
        CheckpointError: hash differs, or the archive does not hold the expected tensors.
    """
    from synthkit.metrics._torchscript import TorchScriptReadError, read_state_dict

    if path is None and file == MODEL_FILE and ENCODER_ASSET.is_file():
        return _load_asset(ENCODER_ASSET), PINNED_SHA256[MODEL_FILE]
    path = locate(file) if path is None else Path(path)
    if not path.is_file():
        raise CheckpointError("deepbet model file not found", path)
    digest = _sha256(path)
    if digest != PINNED_SHA256[file]:
        raise CheckpointError(f"SHA-256 {digest[:16]}... differs from the pinned deepbet {DEEPBET_VERSION} "
                              f"{file} ({PINNED_SHA256[file][:16]}...): refusing to load it", path)
    try:
        state = read_state_dict(path)
    except TorchScriptReadError as e:
        raise CheckpointError(f"cannot read the deepbet model ({e})", path) from None
    model = DeepBetEncoder()
    wanted = model.state_dict()
    enc = {k: state[k] for k in wanted if k in state}
    if len(enc) != len(wanted) or any(enc[k].shape != wanted[k].shape for k in wanted):
        raise CheckpointError("the deepbet model does not have the expected LinkNet3d encoder", path)
    model.load_state_dict(enc, strict=True)
    return model.eval(), digest


def _load_asset(path: Path) -> DeepBetEncoder:
    """The encoder from the shipped safetensors file (its SHA-256 pinned; loaded strictly)."""
    from safetensors.torch import load_file

    digest = _sha256(path)
    if digest != ENCODER_ASSET_SHA256:
        raise CheckpointError(f"SHA-256 {digest[:16]}... differs from the pinned deepbet encoder "
                              f"({ENCODER_ASSET_SHA256[:16]}...): refusing to load it", path)
    model = DeepBetEncoder()
    model.load_state_dict(load_file(str(path)), strict=True)
    return model.eval()


def export_encoder(dst: str | Path, src: str | Path | None = None) -> Path:
    """Write the encoder tensors of deepbet's ``bbox_model.pt`` (``src``, default: the installed
    wheel's, hash-checked) to ``dst`` as safetensors: how :data:`ENCODER_ASSET` was made."""
    from safetensors.torch import save

    from synthkit.io.atomic import write_bytes
    from synthkit.metrics._torchscript import read_state_dict

    path = locate(MODEL_FILE) if src is None else Path(src)
    if _sha256(path) != PINNED_SHA256[MODEL_FILE]:
        raise CheckpointError("not deepbet 1.0.2's bbox_model.pt", path)
    state = read_state_dict(path)
    wanted = DeepBetEncoder().state_dict()
    tensors = {k: state[k].detach().to(torch.float32).contiguous() for k in sorted(wanted)}
    meta = {"source": f"deepbet {DEEPBET_VERSION} {MODEL_FILE}", "source_sha256": PINNED_SHA256[MODEL_FILE],
            "license": "MIT, Copyright (c) 2023 Medical Machine Learning Lab - University of Muenster"}
    return write_bytes(Path(dst), save(tensors, metadata=meta))


def to_canonical(vol: np.ndarray, affine: np.ndarray | None) -> np.ndarray:
    """``(C, D, H, W)`` reoriented to the closest canonical (RAS+) axes of ``affine``."""
    if affine is None:
        return vol
    return np.ascontiguousarray(to_ras(vol, affine), dtype=np.float32)


def prepare(vol: np.ndarray, affine: np.ndarray | None = None) -> np.ndarray:
    """deepbet's input ``(C, 128, 128, 128)`` float32 for a volume ``(C, D, H, W)`` (module doc)."""
    v = torch.from_numpy(to_canonical(np.asarray(vol, dtype=np.float32), affine))
    v = torch.nan_to_num(v)
    x = F.interpolate(v[:, None], size=INPUT_SHAPE, mode="nearest-exact")[:, 0]
    out = []
    for c in x:
        # numpy's linear quantile equals torch.quantile's default and is several times faster
        low, high = (float(q) for q in np.quantile(c.numpy(), [0.005, 0.995]))
        c = ((c - low) / (high - low)).clamp(0, 1) if high > low else torch.zeros_like(c)
        std = c.std()
        c = (c - c.mean()) / std if std > 0 else torch.zeros_like(c)
        out.append(0.226 * c + 0.449)
    return torch.stack(out).numpy()
