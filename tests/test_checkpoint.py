"""Checkpoint format: round trip, atomic writes, and refusal of anything that is not one."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from torch import nn

from synthkit.errors import CheckpointError
from synthkit.runtime import checkpoint as ckpt
from synthkit.training.ema import EMA
from synthkit.training.rng import capture_rng, restore_rng


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(3, 4, 3, padding=1), nn.GroupNorm(2, 4), nn.SiLU(), nn.Conv3d(4, 1, 1))


def _trained_state(step: int = 3) -> tuple[nn.Module, torch.optim.Optimizer, EMA, ckpt.TrainingState]:
    model = _net()
    ema = EMA(model, 0.9)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(1)
    for _ in range(step):
        loss = model(torch.randn(2, 3, 4, 4, 4, generator=g)).abs().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        ema.update(model)
    state = ckpt.TrainingState(step=step, model=model.state_dict(), ema=ema.state_dict(),
                               ema_updates=ema.num_updates, optimizer=opt.state_dict(),
                               rng={0: capture_rng({"train": g}), 1: capture_rng()}, info={"elapsed": 1.5})
    return model, opt, ema, state


def test_round_trip_is_exact(tmp_path):
    model, opt, _ema, state = _trained_state()
    path = ckpt.save_checkpoint(tmp_path / "step_00000003.safetensors", state)
    back = ckpt.load_checkpoint(path)
    assert back.step == 3 and back.ema_updates == 3 and back.info["elapsed"] == 1.5
    for k, v in state.model.items():
        assert torch.equal(back.model[k], v)
    for k, v in state.ema.items():
        assert torch.equal(back.ema[k], v)
    # the optimizer continues exactly as the original would
    model2 = _net()
    model2.load_state_dict(back.model)
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-3, weight_decay=0.0)
    opt2.load_state_dict(back.optimizer)
    x = torch.randn(2, 3, 4, 4, 4, generator=torch.Generator().manual_seed(5))
    for m, o in ((model, opt), (model2, opt2)):
        m(x).abs().mean().backward()
        o.step()
    for p, q in zip(model.parameters(), model2.parameters(), strict=True):
        assert torch.equal(p, q)
    assert set(back.rng) == {0, 1}
    assert torch.equal(back.rng[0]["gen_train"], state.rng[0]["gen_train"])


def test_rng_states_restore_exactly():
    import random

    import numpy as np

    g = torch.Generator().manual_seed(3)
    states = capture_rng({"g": g})
    a = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=g))
    torch.manual_seed(99)
    np.random.seed(99)
    random.seed(99)
    g.manual_seed(99)
    restore_rng(states, {"g": g})
    b = (torch.rand(3), np.random.rand(3), random.random(), torch.rand(2, generator=g))
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2] and torch.equal(a[3], b[3])


class _Evil:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("name", ["step_00000002.safetensors", "model.safetensors", "model.pt"])
def test_malicious_pickle_is_refused_and_never_executed(tmp_path, name):
    marker = tmp_path / "pwned"
    path = tmp_path / name
    path.write_bytes(pickle.dumps({"model": _Evil(str(marker))}))
    # sanity: the payload is live (what an unpickler would call, called by hand)
    probe = tmp_path / "probe"
    fn, args = _Evil(str(probe)).__reduce__()
    fn(*args).close()
    assert probe.exists()
    loader = ckpt.load_checkpoint if name.startswith("step") else ckpt.load_weights
    with pytest.raises(CheckpointError, match=name):
        loader(path)
    assert not marker.exists()


def test_torch_save_pickle_with_payload_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2), "evil": _Evil(str(marker))}, path)
    with pytest.raises(CheckpointError, match="refusing"):
        ckpt.load_weights(path)
    assert not marker.exists()


def test_truncated_and_foreign_files_are_refused(tmp_path):
    _, _, _, state = _trained_state(1)
    good = ckpt.save_checkpoint(tmp_path / "step_00000001.safetensors", state)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        ckpt.load_checkpoint(cut)
    # a valid safetensors file that is not a synthkit checkpoint
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(tmp_path / "foreign.safetensors"))
    with pytest.raises(CheckpointError, match="not a synthkit-checkpoint"):
        ckpt.load_checkpoint(tmp_path / "foreign.safetensors")
    with pytest.raises(CheckpointError, match="no such"):
        ckpt.load_checkpoint(tmp_path / "missing.safetensors")
    # weights that do not fit the model
    with pytest.raises(CheckpointError, match="do not match"):
        ckpt.check_state_dict(nn.Linear(2, 2), state.model, good)


def test_weights_file_and_pruning(tmp_path):
    _model, _, ema, state = _trained_state(2)
    w = ckpt.save_weights(tmp_path / "model.safetensors", ema.state_dict(), {"step": 2})
    back = ckpt.load_weights(w)
    assert all(torch.equal(back[k], v) for k, v in ema.state_dict().items())
    # load_weights on a checkpoint returns its EMA weights
    for s in (2, 4, 6):
        ckpt.save_checkpoint(ckpt.checkpoint_path(tmp_path, s), state)
    (ckpt.checkpoint_dir(tmp_path) / ".step_00000008.safetensors.abc.tmp").write_bytes(b"partial")
    assert ckpt.latest_checkpoint(tmp_path).name == "step_00000006.safetensors"
    assert torch.equal(ckpt.load_weights(ckpt.latest_checkpoint(tmp_path))["0.weight"], state.ema["0.weight"])
    ckpt.prune_checkpoints(tmp_path, keep=2)
    assert sorted(os.listdir(ckpt.checkpoint_dir(tmp_path))) == ["step_00000004.safetensors",
                                                                  "step_00000006.safetensors"]


def test_failed_write_leaves_previous_checkpoint_intact(tmp_path, monkeypatch):
    _, _, _, state = _trained_state(1)
    path = ckpt.save_checkpoint(tmp_path / "step_00000001.safetensors", state)
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")

    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "save_file", boom)
    with pytest.raises(OSError):
        ckpt.save_checkpoint(path, state)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_ema_warmup_and_decay():
    model = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # warm-up decay min(0.5, 1/10) = 0.1
    assert ema.model.weight.item() == pytest.approx(0.9)
    ema.update(model)  # min(0.5, 2/11)
    assert ema.model.weight.item() == pytest.approx(0.9 + 0.1 * (1 - 2 / 11))
    assert not any(p.requires_grad for p in ema.model.parameters())


def test_lr_schedule_follows_paper():
    from synthkit.config import TrainConfig
    from synthkit.training.lr import lr_at

    tc = TrainConfig(steps=10)
    assert [lr_at(s, tc) for s in range(10)] == [1e-5] * 5 + [1e-6] * 5
