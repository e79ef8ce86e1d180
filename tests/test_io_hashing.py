"""synthkit.io.hashing: the one file SHA-256."""

from __future__ import annotations

import hashlib

import numpy as np

from synthkit.io.hashing import file_sha256, update_from_file


def test_file_sha256_matches_hashlib_across_block_boundaries(tmp_path):
    data = np.random.default_rng(0).bytes(10_000)
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_sha256(path) == expected
    assert file_sha256(str(path), chunk=4096) == expected  # 3 blocks, the last one short
    h = hashlib.blake2b(b"prefix", digest_size=16)
    update_from_file(h, path, chunk=1000)
    assert h.hexdigest() == hashlib.blake2b(b"prefix" + data, digest_size=16).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha256(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()
