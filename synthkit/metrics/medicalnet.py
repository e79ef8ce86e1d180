"""MedicalNet 3D ResNet feature extractor (Chen, Ma & Zheng, "Med3D: Transfer Learning for 3D
Medical Image Analysis", 2019; Tencent/MedicalNet).

The network is the MedicalNet backbone without its segmentation head:

* stem: ``Conv3d(1, 64, 7, stride 2, padding 3, bias=False)`` -> BN -> ReLU ->
  ``MaxPool3d(3, stride 2, padding 1)``;
* ``layer1`` (64 planes, stride 1), ``layer2`` (128, stride 2), ``layer3`` (256, stride 1,
  dilation 2), ``layer4`` (512, stride 1, dilation 4). In a dilated stage every block's 3x3x3
  convolution uses ``padding = dilation`` (the first block included), so layer3/4 keep the
  spatial size of layer2's output;
* basic blocks (depth 10/18/34) or bottlenecks (depth 50, expansion 4, stride and dilation on
  the middle 3x3x3 conv); all convolutions ``bias=False``, each followed by ``BatchNorm3d``;
* the shortcut of a block whose stride or width changes is, for shortcut type ``"A"``
  (MedicalNet's choice for 18/34), parameter-free: ``avg_pool3d(kernel 1, stride)`` (plain
  subsampling) followed by zero channels appended; for type ``"B"`` (10/50) a 1x1x1 conv
  (``bias=False``, with the stride) + BN, stored as ``downsample.0`` / ``downsample.1``.

``forward`` returns the global average of layer4 over space: ``(N, 1, D, H, W) -> (N, F)``,
``F = 512`` (depth 10/18/34) or ``2048`` (depth 50). No intensity preprocessing happens inside the
module (see :mod:`synthkit.metrics.features`). Parameter names equal MedicalNet's, so an official
checkpoint (``{"state_dict": {"module.conv1.weight": ...}}``) loads with ``strict=True`` once the
``module.`` (DataParallel) prefix is removed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from synthkit.errors import CheckpointError
from synthkit.io.hashing import file_sha256 as sha256_file

__all__ = [
    "DEPTHS",
    "WEIGHTS_ENV",
    "MedicalNet",
    "build",
    "default_weights_path",
    "feature_dim",
    "load",
    "sha256_file",
]

WEIGHTS_ENV = "SYNTHKIT_MEDICALNET_WEIGHTS"

#: depth -> (block kind, blocks per stage, shortcut type), as MedicalNet trained them.
DEPTHS: dict[int, tuple[str, tuple[int, int, int, int], str]] = {
    10: ("basic", (1, 1, 1, 1), "B"),
    18: ("basic", (2, 2, 2, 2), "A"),
    34: ("basic", (3, 4, 6, 3), "A"),
    50: ("bottleneck", (3, 4, 6, 3), "B"),
}


def feature_dim(depth: int) -> int:
    """Length F of the feature vector for a given depth (512, or 2048 for depth 50)."""
    _check_depth(depth)
    return 512 * (4 if DEPTHS[depth][0] == "bottleneck" else 1)


def _check_depth(depth: int) -> None:
    if depth not in DEPTHS:
        raise ValueError(f"MedicalNet depth must be one of {sorted(DEPTHS)}, got {depth}")


def _conv3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv3d:
    return nn.Conv3d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


class _ZeroPadShortcut(nn.Module):
    """Shortcut type A: subsample by ``stride`` then append zero channels up to ``planes``."""

    def __init__(self, planes: int, stride: int):
        super().__init__()
        self.planes = planes
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.avg_pool3d(x, kernel_size=1, stride=self.stride)
        pad = out.new_zeros(out.shape[0], self.planes - out.shape[1], *out.shape[2:])
        return torch.cat([out, pad], dim=1)


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, shortcut: nn.Module | None):
        super().__init__()
        self.conv1 = _conv3(cin, planes, stride, dilation)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.downsample = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(y + skip)


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, shortcut: nn.Module | None):
        super().__init__()
        self.conv1 = nn.Conv3d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(planes)
        self.conv2 = _conv3(planes, planes, stride, dilation)
        self.bn2 = nn.BatchNorm3d(planes)
        self.conv3 = nn.Conv3d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(planes * 4)
        self.downsample = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        skip = x if self.downsample is None else self.downsample(x)
        return F.relu(y + skip)


class MedicalNet(nn.Module):
    """MedicalNet ResNet backbone as a feature extractor: ``(N, 1, D, H, W) -> (N, F)``.

    Always used in eval mode (BatchNorm running statistics); call :func:`build` or :func:`load`.
    """

    def __init__(self, depth: Literal[10, 18, 34, 50] = 10):
        super().__init__()
        _check_depth(depth)
        kind, blocks, shortcut = DEPTHS[depth]
        self.depth = depth
        self.shortcut_type = shortcut
        block = _Basic if kind == "basic" else _Bottleneck
        self.conv1 = nn.Conv3d(1, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(64)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        self._cin = 64
        self.layer1 = self._stage(block, 64, blocks[0], shortcut, stride=1, dilation=1)
        self.layer2 = self._stage(block, 128, blocks[1], shortcut, stride=2, dilation=1)
        self.layer3 = self._stage(block, 256, blocks[2], shortcut, stride=1, dilation=2)
        self.layer4 = self._stage(block, 512, blocks[3], shortcut, stride=1, dilation=4)
        self.out_features = 512 * block.expansion
        del self._cin

    def _stage(self, block: type, planes: int, n: int, shortcut: str, stride: int, dilation: int):
        cout = planes * block.expansion
        skip: nn.Module | None = None
        if stride != 1 or self._cin != cout:
            if shortcut == "A":
                skip = _ZeroPadShortcut(cout, stride)
            else:
                skip = nn.Sequential(
                    nn.Conv3d(self._cin, cout, 1, stride=stride, bias=False), nn.BatchNorm3d(cout)
                )
        layers = [block(self._cin, planes, stride, dilation, skip)]
        self._cin = cout
        layers += [block(cout, planes, 1, dilation, None) for _ in range(1, n)]
        return nn.Sequential(*layers)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """Layer4 activations ``(N, F, D', H', W')`` for input ``(N, 1, D, H, W)``."""
        if x.ndim != 5 or x.shape[1] != 1:
            raise ValueError(f"MedicalNet expects (N, 1, D, H, W), got {tuple(x.shape)}")
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled layer4 features ``(N, F)``."""
        return self.feature_map(x).mean(dim=(2, 3, 4))


def build(depth: int = 10, *, seed: int = 0) -> MedicalNet:
    """A randomly initialised extractor (Kaiming-normal fan-out convs, BN weight 1 / bias 0,
    as MedicalNet initialises), seeded so every run gets the same features. Eval mode.

    Features of a random network are *not* comparable with published 3D-FID numbers.
    """
    model = MedicalNet(depth)  # type: ignore[arg-type]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv3d):
                fan_out = m.out_channels * m.kernel_size[0] * m.kernel_size[1] * m.kernel_size[2]
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * (2.0 / fan_out) ** 0.5)
            elif isinstance(m, nn.BatchNorm3d):
                m.weight.fill_(1.0)
                m.bias.zero_()
    return model.eval()


def default_weights_path() -> Path | None:
    """The weights file named by ``$SYNTHKIT_MEDICALNET_WEIGHTS``, or None if unset/empty."""
    value = os.environ.get(WEIGHTS_ENV, "").strip()
    return Path(value).expanduser() if value else None


def load(path: str | Path, depth: int = 10) -> MedicalNet:
    """Load an official MedicalNet checkpoint (e.g. ``resnet_10_23dataset.pth``) strictly.

    The file must hold ``{"state_dict": {...}}`` (a bare state dict is accepted too); a leading
    ``module.`` is stripped from every key. Segmentation-head keys (``conv_seg.*``) are dropped;
    every other key must match the backbone exactly (``num_batches_tracked`` may be absent, as
    in checkpoints saved by PyTorch < 0.4.1). Read with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: missing/unreadable file, wrong depth, missing or unexpected keys,
            mismatched shapes.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError("MedicalNet weights file not found", path)
    _check_depth(depth)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any failure means "not a readable checkpoint"
        raise CheckpointError(f"cannot read MedicalNet checkpoint ({type(e).__name__}: {e})", path)
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not state:
        raise CheckpointError("not a MedicalNet checkpoint (no 'state_dict')", path)
    clean: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        name = key.removeprefix("module.")
        if name.startswith("conv_seg."):
            continue
        if not isinstance(value, torch.Tensor):
            raise CheckpointError(f"entry {key!r} is not a tensor", path)
        clean[name] = value
    model = MedicalNet(depth)  # type: ignore[arg-type]
    expected = model.state_dict()
    for name, ref in expected.items():
        if name.endswith("num_batches_tracked") and name not in clean:
            clean[name] = ref.clone()
    missing = sorted(set(expected) - set(clean))
    unexpected = sorted(set(clean) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"does not match MedicalNet resnet{depth} (wrong --feature-depth?): "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), "
            f"{len(unexpected)} unexpected keys (e.g. {unexpected[:3]})",
            path,
        )
    for name, ref in expected.items():
        if tuple(clean[name].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"resnet{depth} key {name!r} has shape {tuple(clean[name].shape)}, "
                f"expected {tuple(ref.shape)} (wrong --feature-depth?)",
                path,
            )
    model.load_state_dict(clean, strict=True)
    return model.eval()
