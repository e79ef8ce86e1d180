"""`synthkit weights fetch/list` against a loopback server laid out like the Hugging Face Hub
(``{endpoint}/{repo_id}/resolve/{revision}/{filename}``, HEAD + GET): a tampered file is refused
and leaves nothing in the cache; the right one is accepted and then found by
``evaluate --features medicalnet-resnet10`` with no path."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
from typing import ClassVar

import pytest
import torch

from synthkit.metrics import weights as W


class _Hub(http.server.BaseHTTPRequestHandler):
    files: ClassVar[dict[str, bytes]] = {}
    requests: ClassVar[list[str]] = []

    def _send(self, body: bool) -> None:
        self.requests.append(f"{self.command} {self.path}")
        data = self.files.get(self.path.split("?")[0])
        if data is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.send_header("X-Error-Code", "EntryNotFound")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("X-Repo-Commit", "0123456789abcdef0123456789abcdef01234567")
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_HEAD(self) -> None:
        self._send(body=False)

    def do_GET(self) -> None:
        self._send(body=True)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def hub(tmp_path, monkeypatch):
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # a loopback server is not the internet
    monkeypatch.setenv("SYNTHKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    _Hub.files, _Hub.requests = {}, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Hub
    server.shutdown()
    server.server_close()


def _fake_medicalnet10() -> bytes:
    """A real MedicalNet resnet10 checkpoint in the official layout (random weights)."""
    from synthkit.metrics.medicalnet import build

    buf = io.BytesIO()
    torch.save({"state_dict": {f"module.{k}": v for k, v in build(10, seed=3).state_dict().items()}}, buf)
    return buf.getvalue()


def _serve(hub_cls, entry: W.WeightsEntry, data: bytes) -> None:
    hub_cls.files[f"/{entry.repo_id}/resolve/{entry.revision}/{entry.filename}"] = data


def _test_entry(monkeypatch, data: bytes, *, pinned: bool = True) -> W.WeightsEntry:
    """Replace the resnet10 entry by a test-only one whose pin is the fake file's hash."""
    entry = W.WeightsEntry("medicalnet-resnet10", "synthkit-test/MedicalNet-Resnet10", "resnet_10_23dataset.pth",
                           hashlib.sha256(data).hexdigest() if pinned else None, 10, sources=("test",))
    monkeypatch.setitem(W.REGISTRY, "medicalnet-resnet10", entry)
    return entry


def _phantom_dir(root, n=4, size=16):
    from phantoms import phantom

    from synthkit.io.nifti import write_nifti

    for i in range(n):
        img, _ = phantom(size=size, seed=i)
        write_nifti(root / f"case_{i:03d}.nii.gz", img.data, img.affine)
    return root


def _cache_files(tmp_path) -> list:
    root = tmp_path / "cache"
    return sorted(p for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_tampered_file_is_refused_and_nothing_is_left(cli, hub, tmp_path, monkeypatch):
    endpoint, hub_cls = hub
    good = _fake_medicalnet10()
    entry = _test_entry(monkeypatch, good)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0x01
    _serve(hub_cls, entry, bytes(bad))
    res = cli("weights", "fetch", "medicalnet-resnet10", "--endpoint", endpoint, "--quiet")
    assert res.exit_code != 0
    lines = [ln for ln in res.output.splitlines() if ln.startswith("synthkit: error")]
    assert len(lines) == 1 and "refused and removed" in lines[0] and entry.sha256 in lines[0], res.output
    assert "Traceback" not in res.output
    assert any(r.startswith("GET /synthkit-test/") for r in hub_cls.requests)  # it really downloaded
    assert _cache_files(tmp_path) == []
    with pytest.raises(Exception, match="weights fetch medicalnet-resnet10"):
        W.cached_weights("medicalnet-resnet10")


def test_right_file_is_accepted_and_found_by_evaluate(cli, hub, tmp_path, monkeypatch):
    endpoint, hub_cls = hub
    good = _fake_medicalnet10()
    entry = _test_entry(monkeypatch, good)
    _serve(hub_cls, entry, good)
    res = cli("weights", "fetch", "medicalnet-resnet10", "--endpoint", endpoint, "--quiet")
    assert res.exit_code == 0, res.output
    cached = W.cached_weights("medicalnet-resnet10")
    assert cached.read_bytes() == good and _cache_files(tmp_path) == [cached]
    listing = cli("weights", "list")
    assert listing.exit_code == 0 and "medicalnet-resnet10" in listing.output and "yes" in listing.output
    # second fetch: already verified, no new download
    n_get = sum(r.startswith("GET") for r in hub_cls.requests)
    assert cli("weights", "fetch", "medicalnet-resnet10", "--endpoint", endpoint, "--quiet").exit_code == 0
    assert sum(r.startswith("GET") for r in hub_cls.requests) == n_get
    real = _phantom_dir(tmp_path / "real", n=4)
    res = cli("evaluate", real, real, "--features", "medicalnet-resnet10", "--n-boot", "10", "--quiet",
              "--json", tmp_path / "o.json")
    assert res.exit_code == 0, res.output
    import json

    ext = json.loads((tmp_path / "o.json").read_text())["settings"]["extractor"]
    assert ext["features"] == "medicalnet-resnet10" and ext["weights_sha256"] == entry.sha256
    # the cached file changed behind our back: refused when used
    cached.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    res = cli("evaluate", real, real, "--features", "medicalnet-resnet10", "--quiet")
    assert res.exit_code != 0 and "SHA-256" in res.output and "Traceback" not in res.output


def test_unpinned_entry_needs_sha256(cli, hub, tmp_path, monkeypatch):
    endpoint, hub_cls = hub
    good = _fake_medicalnet10()
    entry = _test_entry(monkeypatch, good, pinned=False)
    _serve(hub_cls, entry, good)
    res = cli("weights", "fetch", "medicalnet-resnet10", "--endpoint", endpoint, "--quiet")
    assert res.exit_code != 0 and "--sha256" in res.output and not hub_cls.requests
    assert "UNPINNED" in cli("weights", "list").output
    res = cli("weights", "fetch", "medicalnet-resnet10", "--endpoint", endpoint, "--quiet", "--sha256", "abc")
    assert res.exit_code != 0 and "64 hexadecimal" in res.output
    digest = hashlib.sha256(good).hexdigest()
    res = cli("weights", "fetch", "medicalnet-resnet10", "--endpoint", endpoint, "--quiet", "--sha256", digest)
    assert res.exit_code == 0, res.output
    assert W.cached_weights("medicalnet-resnet10").read_bytes() == good


def test_unknown_name_missing_file_and_bad_endpoint_are_one_line_errors(cli, hub, monkeypatch):
    endpoint, _ = hub
    res = cli("weights", "fetch", "medicalnet-resnet99", "--quiet")
    assert res.exit_code != 0 and "unknown weights" in res.output
    _test_entry(monkeypatch, b"x")  # nothing served: 404
    res = cli("weights", "fetch", "medicalnet-resnet10", "--endpoint", endpoint, "--quiet")
    lines = [ln for ln in res.output.splitlines() if ln.startswith("synthkit: error")]
    assert res.exit_code != 0 and len(lines) == 1 and "cannot download" in lines[0], res.output
    from synthkit.errors import UsageError
    from synthkit.metrics.extractors import make_extractor

    with pytest.raises(UsageError, match="synthkit weights fetch medicalnet-resnet18"):
        make_extractor(features="medicalnet-resnet18")


def test_registry_pins_are_well_formed():
    for name, e in W.REGISTRY.items():
        assert name == e.name == f"medicalnet-resnet{e.depth}"
        assert e.repo_id == f"TencentMedicalNet/MedicalNet-Resnet{e.depth}"
        assert e.filename == f"resnet_{e.depth}_23dataset.pth"
        assert e.sha256 is None or (len(e.sha256) == 64 and int(e.sha256, 16) >= 0 and e.sources)
