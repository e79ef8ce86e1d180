"""The offline pretrained extractor: deepbet's model file found without importing deepbet, pinned
by SHA-256, read without running TorchScript, rebuilt encoder identical to the shipped network,
and deepbet's own preprocessing."""

from __future__ import annotations

import io
import pickle
import sys
import warnings
import zipfile

import numpy as np
import pytest
import torch

from synthkit.errors import CheckpointError
from synthkit.metrics import deepbet
from synthkit.metrics._torchscript import TorchScriptReadError, read_state_dict


@pytest.fixture(scope="module")
def encoder():
    model, digest = deepbet.load()
    return model, digest


def test_located_without_importing_deepbet_and_hash_pinned(encoder):
    _, digest = encoder
    path = deepbet.locate()
    assert path.name == "bbox_model.pt" and digest == deepbet.PINNED_SHA256[deepbet.MODEL_FILE]
    assert "deepbet" not in sys.modules  # its GUI / heavy dependencies are never imported


def test_restricted_reader_equals_torchscript_and_encoder_equals_shipped_network(encoder):
    """The only place TorchScript runs: here, on the hash-pinned file, to prove the rebuilt
    encoder (loaded from tensors read without TorchScript) computes exactly the same stages."""
    model, _ = encoder
    path = deepbet.locate()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch >= 2.9 deprecates jit.load
        scripted = torch.jit.load(str(path), map_location="cpu")
    ours = read_state_dict(path)
    ref = scripted.state_dict()
    assert list(ours) == list(ref) and all(torch.equal(ours[k], ref[k]) for k in ref)
    relu = scripted.conv._modules["2"]  # the traced graph threads one shared ReLU through
    x = torch.randn(2, 1, 64, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        got = model.stages(x)
        h = scripted.init(relu, x.clone())
        want = [h]
        for name in ("down0", "down1", "down2", "down3"):
            h = getattr(scripted, name)(relu, h.clone())
            want.append(h)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-5)
    feats = model(x)
    assert feats.shape == (2, deepbet.FEATURE_DIM) == (2, 256) and torch.isfinite(feats).all()


def test_modified_file_is_refused_before_reading(tmp_path):
    data = bytearray(deepbet.locate().read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "bbox_model.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256 .* refusing"):
        deepbet.load(tmp_path / "bbox_model.pt")


def test_reader_refuses_any_other_global(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    archive = tmp_path / "evil.pt"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("m/data.pkl", pickle.dumps(Evil(), protocol=2))
    with pytest.raises(TorchScriptReadError, match="refusing pickled global .*print"):
        read_state_dict(archive)
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(TorchScriptReadError):
        read_state_dict(tmp_path / "junk.pt")
    buf = io.BytesIO()
    torch.save({"a": torch.zeros(2)}, buf)  # a plain torch.save zip is not TorchScript's layout
    (tmp_path / "plain.pt").write_bytes(buf.getvalue())
    with pytest.raises(TorchScriptReadError):
        read_state_dict(tmp_path / "plain.pt")


def _head(size=24, seed=0):
    rng = np.random.default_rng(seed)
    z, y, x = np.mgrid[:size, :size, :size] - size / 2
    inside = x**2 / 0.8 + y**2 + z**2 < (size / 2.6) ** 2
    return np.where(inside, 200 + 100 * rng.random((size,) * 3), 0.0).astype(np.float32)[None]


def test_prepare_follows_deepbet():
    v = _head()
    p = deepbet.prepare(v)
    assert p.shape == (1, 128, 128, 128) and p.dtype == np.float32
    assert p.mean() == pytest.approx(0.449, abs=1e-4) and p.std() == pytest.approx(0.226, rel=1e-3)
    # quantile clipping + z-score: invariant to a positive affine change of intensity
    np.testing.assert_allclose(deepbet.prepare(3.0 * v + 50.0), p, atol=1e-5)
    # orientation: a volume stored with a flipped first axis (negative x spacing) prepares the same
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    np.testing.assert_allclose(deepbet.prepare(v[:, ::-1].copy(), flip), p, atol=1e-6)
    assert np.all(deepbet.prepare(np.zeros_like(v)) == np.float32(0.449))  # constant: no NaN


def test_extractor_embeds_channels_separately_and_repeats(encoder):
    from synthkit.metrics.extractors import make_extractor

    ext = make_extractor(features="deepbet")
    assert ext.kind == "deepbet" and ext.pretrained and ext.weights == encoder[1]
    two = np.concatenate([_head(16, 0), _head(16, 1)])
    prepared = np.stack([ext.prepare(two), ext.prepare(two[::-1].copy())])
    f = ext.embed(prepared)
    assert f.shape == (2, 512)
    np.testing.assert_array_equal(f[0, :256], f[1, 256:])
    np.testing.assert_array_equal(f, ext.embed(prepared))
