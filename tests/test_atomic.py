import os
import stat

import pytest

from synthkit.io.atomic import atomic_path, write_json


def test_atomic_write_has_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        p = write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(p.stat().st_mode) == 0o644


def test_failed_write_leaves_nothing(tmp_path):
    target = tmp_path / "vol.nii.gz"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("crash")
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_old_file(tmp_path):
    target = tmp_path / "a.json"
    write_json(target, {"v": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("{")
        raise RuntimeError("crash")
    assert target.read_text().strip().startswith("{\n")
    assert len(list(tmp_path.iterdir())) == 1
