"""`synthkit cohort check` / `synthkit cohort demo` end to end through the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from test_io_builders import make_brats, make_dicom_cohort, make_flat, make_nnunet
from test_io_check import make_bad_flat

BUILDERS = {
    "flat": lambda root: make_flat(root, ["b", "a"], channels=2),
    "nnunet": lambda root: make_nnunet(root, ["c1", "c0"], test_ids=["t0"]),
    "brats": lambda root: make_brats(root, ["BraTS_1", "BraTS_0"]),
    "dicom": lambda root: make_dicom_cohort(root, ["s1", "s0"]),
}


@pytest.mark.parametrize("layout", sorted(BUILDERS))
def test_check_good_cohort_of_each_layout(cli, tmp_path, layout):
    root = BUILDERS[layout](tmp_path / "cohort")
    out = tmp_path / "report" / "check.json"
    result = cli("cohort", "check", root, "--json", out)
    assert result.exit_code == 0, result.output
    assert "cases usable" in result.output
    doc = json.loads(out.read_text())
    assert doc["layout"] == layout and doc["cohort"] == str(root)
    assert doc["n_cases"] == doc["n_ok"] == len(doc["cases"]) >= 2
    for case in doc["cases"]:
        assert set(case) == {"id", "ok", "problems", "shape", "spacing", "labels", "channels"}
        assert case["ok"] and case["problems"] == []
        assert len(case["shape"]) == 3 and len(case["spacing"]) == 3
    assert [p.name for p in out.parent.iterdir()] == ["check.json"]  # no temp file left


def test_check_bad_cohort_names_each_case_and_exits_1(cli, tmp_path):
    root = make_bad_flat(tmp_path / "bad")
    out = tmp_path / "r.json"
    result = cli("cohort", "check", root, "--json", out)
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "2 of 8 cases usable" in result.output
    doc = json.loads(out.read_text())
    cases = {c["id"]: c for c in doc["cases"]}
    assert doc["n_ok"] == 2 and cases["good1"]["ok"] and cases["good2"]["ok"]
    assert "truncated" in cases["trunc"]["problems"][0]
    assert cases["nan"]["problems"] == ["image has 2 NaN/Inf voxels"]
    assert "shape (16, 16, 16) vs (16, 16, 12)" in cases["shape"]["problems"][0]
    assert cases["nomask"]["problems"] == ["missing mask"]
    assert not any(c["ok"] for cid, c in cases.items() if not cid.startswith("good"))


def test_check_in_a_subprocess_has_no_traceback(tmp_path):
    root = make_bad_flat(tmp_path / "bad")
    proc = subprocess.run([sys.executable, "-m", "synthkit", "cohort", "check", str(root), "--quiet"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "2 of 8 cases usable" in proc.stdout


def test_usage_errors_exit_2_with_one_line(cli, tmp_path):
    result = cli("cohort", "check", tmp_path / "missing")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("synthkit: error:") and "folder not found" in lines[0]

    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("hello")
    result = cli("cohort", "check", tmp_path / "junk")
    assert result.exit_code == 2
    assert "unrecognised cohort layout" in result.stderr
    assert "Traceback" not in result.output


def test_strict_stops_with_one_line(cli, tmp_path):
    root = make_bad_flat(tmp_path / "bad")
    out = tmp_path / "r.json"
    result = cli("cohort", "check", root, "--strict", "--quiet", "--json", out)
    assert result.exit_code == 1
    assert "case empty: empty mask (no foreground)" in result.stderr
    assert not out.exists()


def test_masks_only(cli, tmp_path):
    make_flat(tmp_path / "c", ["a", "b"])
    masks = tmp_path / "c" / "masks"
    assert cli("cohort", "check", masks).exit_code == 2
    out = tmp_path / "m.json"
    result = cli("cohort", "check", masks, "--masks-only", "--json", out)
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert doc["layout"] == "masks" and doc["n_ok"] == 2
    assert doc["cases"][0]["channels"] is None and doc["cases"][0]["labels"] == [0, 1]


def test_demo_calls_write_demo_cohort(cli, tmp_path, monkeypatch):
    calls = {}

    def fake_write_demo_cohort(out, n=20, size=48, seed=0, progress=None, first=0):
        calls.update(out=Path(out), n=n, size=size, seed=seed, first=first, has_progress=progress is not None)
        make_nnunet(Path(out), [f"demo_{i:03d}" for i in range(n)], channels=("T1",))
        from synthkit.io.cohort import discover_cohort

        return discover_cohort(out)

    fake = types.ModuleType("synthkit.io.demo_cohort")
    fake.write_demo_cohort = fake_write_demo_cohort
    monkeypatch.setitem(sys.modules, "synthkit.io.demo_cohort", fake)
    out = tmp_path / "demo"
    result = cli("cohort", "demo", out, "--n", "3", "--size", "16", "--seed", "7", "--first", "5", "--quiet")
    assert result.exit_code == 0, result.output
    assert calls == {"out": out, "n": 3, "size": 16, "seed": 7, "first": 5, "has_progress": True}
    assert f"wrote 3 cases to {out}" in result.output
    assert cli("cohort", "check", out, "--quiet").exit_code == 0
