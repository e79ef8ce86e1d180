"""MedicalNet extractor: official checkpoint format loads strictly and matches an independently
written functional forward pass (F.conv3d) of the reference architecture."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from synthkit.errors import CheckpointError
from synthkit.metrics import medicalnet

# Independent description of Tencent/MedicalNet models/resnet.py (not derived from synthkit).
SPEC = {10: ("basic", [1, 1, 1, 1], "B"), 18: ("basic", [2, 2, 2, 2], "A"),
        34: ("basic", [3, 4, 6, 3], "A"), 50: ("bottleneck", [3, 4, 6, 3], "B")}
STAGES = [(64, 1, 1), (128, 2, 1), (256, 1, 2), (512, 1, 4)]  # planes, stride, dilation


def _bn(sd, prefix, c, gen):
    if gen is None:  # names and shapes only
        for k in ("weight", "bias", "running_mean", "running_var"):
            sd[f"{prefix}.{k}"] = torch.empty(c, device="meta")
        sd[prefix + ".num_batches_tracked"] = torch.empty((), dtype=torch.long, device="meta")
        return
    sd[prefix + ".weight"] = torch.rand(c, generator=gen) + 0.5
    sd[prefix + ".bias"] = torch.randn(c, generator=gen) * 0.1
    sd[prefix + ".running_mean"] = torch.randn(c, generator=gen) * 0.1
    sd[prefix + ".running_var"] = torch.rand(c, generator=gen) + 0.5
    sd[prefix + ".num_batches_tracked"] = torch.tensor(7)


def _conv(sd, key, cout, cin, k, gen):
    if gen is None:
        sd[key] = torch.empty(cout, cin, k, k, k, device="meta")
        return
    sd[key] = torch.randn(cout, cin, k, k, k, generator=gen) * (2.0 / (cin * k**3)) ** 0.5


def official_state_dict(depth: int, seed: int | None = 0) -> dict[str, torch.Tensor]:
    """Random weights under MedicalNet's exact key names and shapes (with 'module.' prefix);
    ``seed=None``: shapes only (meta tensors)."""
    kind, blocks, shortcut = SPEC[depth]
    exp = 1 if kind == "basic" else 4
    gen = None if seed is None else torch.Generator().manual_seed(seed)
    sd: dict[str, torch.Tensor] = {}
    _conv(sd, "conv1.weight", 64, 1, 7, gen)
    _bn(sd, "bn1", 64, gen)
    cin = 64
    for s, ((planes, stride, _), n) in enumerate(zip(STAGES, blocks), start=1):
        for b in range(n):
            p = f"layer{s}.{b}"
            if kind == "basic":
                _conv(sd, p + ".conv1.weight", planes, cin, 3, gen)
                _bn(sd, p + ".bn1", planes, gen)
                _conv(sd, p + ".conv2.weight", planes, planes, 3, gen)
                _bn(sd, p + ".bn2", planes, gen)
            else:
                _conv(sd, p + ".conv1.weight", planes, cin, 1, gen)
                _bn(sd, p + ".bn1", planes, gen)
                _conv(sd, p + ".conv2.weight", planes, planes, 3, gen)
                _bn(sd, p + ".bn2", planes, gen)
                _conv(sd, p + ".conv3.weight", planes * 4, planes, 1, gen)
                _bn(sd, p + ".bn3", planes * 4, gen)
            if b == 0 and (stride != 1 or cin != planes * exp) and shortcut == "B":
                _conv(sd, p + ".downsample.0.weight", planes * exp, cin, 1, gen)
                _bn(sd, p + ".downsample.1", planes * exp, gen)
            cin = planes * exp
    return {"module." + k: v for k, v in sd.items()}


def functional_forward(sd: dict[str, torch.Tensor], depth: int, x: torch.Tensor) -> torch.Tensor:
    """Reference forward pass written with torch.nn.functional only."""
    sd = {k.removeprefix("module."): v for k, v in sd.items()}
    kind, blocks, shortcut = SPEC[depth]
    exp = 1 if kind == "basic" else 4

    def bn(t, p):
        return F.batch_norm(t, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"],
                            sd[p + ".bias"], training=False, eps=1e-5)

    x = F.relu(bn(F.conv3d(x, sd["conv1.weight"], stride=2, padding=3), "bn1"))
    x = F.max_pool3d(x, 3, stride=2, padding=1)
    cin = 64
    for s, ((planes, stride, dil), n) in enumerate(zip(STAGES, blocks), start=1):
        for b in range(n):
            p = f"layer{s}.{b}"
            st = stride if b == 0 else 1
            if kind == "basic":
                y = F.relu(bn(F.conv3d(x, sd[p + ".conv1.weight"], stride=st, padding=dil, dilation=dil), p + ".bn1"))
                y = bn(F.conv3d(y, sd[p + ".conv2.weight"], padding=dil, dilation=dil), p + ".bn2")
            else:
                y = F.relu(bn(F.conv3d(x, sd[p + ".conv1.weight"]), p + ".bn1"))
                y = F.relu(bn(F.conv3d(y, sd[p + ".conv2.weight"], stride=st, padding=dil, dilation=dil), p + ".bn2"))
                y = bn(F.conv3d(y, sd[p + ".conv3.weight"]), p + ".bn3")
            skip = x
            if b == 0 and (stride != 1 or cin != planes * exp):
                if shortcut == "A":
                    sub = x[:, :, ::st, ::st, ::st]
                    pad = torch.zeros(sub.shape[0], planes * exp - sub.shape[1], *sub.shape[2:])
                    skip = torch.cat([sub, pad], 1)
                else:
                    skip = bn(F.conv3d(x, sd[p + ".downsample.0.weight"], stride=st), p + ".downsample.1")
            x = F.relu(y + skip)
            cin = planes * exp
    return x.mean(dim=(2, 3, 4))


@pytest.mark.parametrize("depth", [10, 18, 50])
def test_official_checkpoint_loads_strictly_and_matches_functional_forward(tmp_path, depth):
    sd = official_state_dict(depth, seed=depth)
    path = tmp_path / f"resnet_{depth}.pth"
    torch.save({"state_dict": sd}, path)
    model = medicalnet.load(path, depth=depth)
    assert not model.training
    x = torch.randn(2, 1, 37, 32, 41, generator=torch.Generator().manual_seed(1))  # layer4 map ~5 voxels: dilation 4 matters
    with torch.no_grad():
        got = model(x)
        want = functional_forward(sd, depth, x)
    assert got.shape == (2, medicalnet.feature_dim(depth))
    assert got.shape[1] == (2048 if depth == 50 else 512)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_parameter_names_cover_the_official_layout_for_all_depths():
    for depth in (10, 18, 34, 50):
        want = {k.removeprefix("module."): tuple(v.shape) for k, v in official_state_dict(depth, None).items()}
        with torch.device("meta"):
            got = {k: tuple(v.shape) for k, v in medicalnet.MedicalNet(depth).state_dict().items()}
        assert got == want


def test_resnet18_and_34_use_parameter_free_shortcut():
    with torch.device("meta"):
        for depth in (18, 34):
            model = medicalnet.MedicalNet(depth)
            assert not any("downsample" in k for k in model.state_dict())
            assert not any("downsample" in name for name, _ in model.named_parameters())
        assert any("downsample" in k for k in medicalnet.MedicalNet(10).state_dict())


def test_load_rejects_wrong_depth_and_garbage(tmp_path):
    sd = official_state_dict(10)
    path = tmp_path / "r10.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError, match="resnet18"):
        medicalnet.load(path, depth=18)
    bad = dict(sd)
    bad["module.extra.weight"] = torch.zeros(1)
    torch.save({"state_dict": bad}, tmp_path / "extra.pth")
    with pytest.raises(CheckpointError, match="unexpected"):
        medicalnet.load(tmp_path / "extra.pth", depth=10)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.pth"):
        medicalnet.load(tmp_path / "junk.pth", depth=10)
    with pytest.raises(CheckpointError, match="not found"):
        medicalnet.load(tmp_path / "missing.pth")


def test_head_keys_are_ignored_and_missing_num_batches_tracked_is_allowed(tmp_path):
    sd = {k: v for k, v in official_state_dict(10).items() if not k.endswith("num_batches_tracked")}
    sd["module.conv_seg.0.weight"] = torch.zeros(512, 32, 2, 2, 2)
    torch.save({"state_dict": sd}, tmp_path / "seg.pth")
    model = medicalnet.load(tmp_path / "seg.pth", depth=10)
    torch.testing.assert_close(model.conv1.weight, sd["module.conv1.weight"])


def test_random_build_is_seeded_and_in_eval_mode():
    x = torch.randn(1, 1, 16, 16, 16)
    a, b, c = medicalnet.build(10, seed=3), medicalnet.build(10, seed=3), medicalnet.build(10, seed=4)
    assert not a.training
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert not torch.equal(a(x), c(x))


def test_env_var_names_default_weights(monkeypatch, tmp_path):
    monkeypatch.delenv(medicalnet.WEIGHTS_ENV, raising=False)
    assert medicalnet.default_weights_path() is None
    monkeypatch.setenv(medicalnet.WEIGHTS_ENV, str(tmp_path / "w.pth"))
    assert medicalnet.default_weights_path() == tmp_path / "w.pth"
