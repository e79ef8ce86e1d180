"""The synthesis engine: real batching through `synthkit sample` (one network call per step for B
volumes, the same volumes as batch size 1 within 1e-4 of the range), resume, the gate's
regenerate/drop, replacement jobs, DDP sharding and progress."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from phantoms import phantom
from test_pipeline import _untrained_run

from synthkit.io import read_nifti, write_nifti
from synthkit.io.volume import Volume
from synthkit.pipeline.engine import Engine, Job, Sampling, default_batch_size
from synthkit.pipeline.pipeline import Pipeline, Prepared


def _masks(folder: Path, n: int) -> Path:
    for i in range(n):
        _, m = phantom(size=16 + 2 * (i % 2), seed=10 + i)  # masks on 16^3 and 18^3 grids
        write_nifti(folder / f"m{i}.nii.gz", m.data, m.affine, is_label=True)
    return folder


@pytest.fixture
def counted(monkeypatch):
    """`synthkit.load` whose network records the batch size of every call."""
    from synthkit.pipeline import loading

    sizes: list[int] = []
    real = loading.load

    def load(*a, **k):
        pipe = real(*a, **k)
        pipe.model.register_forward_hook(lambda mod, args, out: sizes.append(int(args[0].shape[0])))
        return pipe

    monkeypatch.setattr(loading, "load", load)
    return sizes


def test_cli_batch_size_4_is_one_network_call_per_step_and_matches_batch_1(cli, tmp_path, counted):
    run = _untrained_run(tmp_path / "run")
    masks = _masks(tmp_path / "masks", 4)
    args = ["sample", masks, "--model", run, "--sampler", "ddim", "--steps", "3", "--seed", "3", "--quiet"]
    r = cli(*args, "--out", tmp_path / "b4", "--batch-size", "4")
    assert r.exit_code == 0, r.output
    assert counted == [4, 4, 4]  # 3 steps, each one call for the four volumes
    counted.clear()
    r = cli(*args, "--out", tmp_path / "b1", "--batch-size", "1")
    assert r.exit_code == 0, r.output
    assert counted == [1] * 12
    span = 800.0  # intensity.json of the run: lo 0, hi 800
    m4 = json.loads((tmp_path / "b4" / "manifest.json").read_text())["items"]
    m1 = json.loads((tmp_path / "b1" / "manifest.json").read_text())["items"]
    assert [(e["case"], e["seed"]) for e in m4] == [(e["case"], e["seed"]) for e in m1]
    worst = 0.0
    for e in m1:
        a = read_nifti(tmp_path / "b1" / e["images"][0]).data
        b = read_nifti(tmp_path / "b4" / e["images"][0]).data
        assert a.shape == b.shape and float(a.std()) > 1.0  # real images, not constants
        worst = max(worst, float(np.abs(a - b).max()))
    assert worst <= 1e-4 * span, worst


def test_cli_default_batch_size_and_bad_values(cli, tmp_path, counted):
    assert default_batch_size("cpu") == 1 and default_batch_size("cuda:0") == 4
    run = _untrained_run(tmp_path / "run")
    masks = _masks(tmp_path / "masks", 2)
    r = cli("sample", masks, "--model", run, "--out", tmp_path / "o", "--sampler", "ddim", "--steps", "2", "--quiet")
    assert r.exit_code == 0 and counted == [1] * 4  # cpu: one volume per call
    r = cli("sample", masks, "--model", run, "--out", tmp_path / "o2", "--batch-size", "0", "--quiet")
    assert r.exit_code == 2 and "--batch-size" in r.output and "Traceback" not in r.output


def test_cli_plain_progress_lines_when_not_a_terminal(cli, tmp_path):
    run = _untrained_run(tmp_path / "run")
    r = cli("sample", _masks(tmp_path / "masks", 2), "--model", run, "--out", tmp_path / "o", "--sampler", "ddim",
            "--steps", "5", "--per-mask", "2")
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if ln.startswith("synthkit: sample:")]
    assert lines[-1] == "synthkit: sample: 100% (4/4 volumes)" and 4 <= len(lines) <= 10


# ---------------------------------------------------------------------- engine units (a stand-in model)


class _Fake(Pipeline):
    """A Pipeline whose 'network' writes each volume's seed into it (two steps per call)."""

    def __init__(self):  # no run folder, no weights
        self.device = "cpu"
        self.calls: list[list[int]] = []

    def to_network_mask(self, mask, **kw):  # the masks are already in its label values
        return mask

    def prepare(self, mask, label_space="raw"):
        return Prepared(torch.from_numpy(mask.data.astype(np.float32)), mask, True)

    def sample_batch(self, cond, seeds, *, progress=None, **kw):
        self.calls.append([int(s) for s in seeds])
        for i in range(2):
            if progress is not None:
                progress(i + 1, 2)
        return torch.stack([torch.full(tuple(cond.shape[1:]), float(s % 997)) for s in seeds])

    def to_volume(self, x, record):
        return Volume(x.numpy(), record.affine)


def _jobs(n: int) -> list[Job]:
    return [Job(f"v{i}", Volume(np.full((1, 2, 2, 2), i % 3, np.int16), np.eye(4)), 0, i) for i in range(n)]


def _engine(pipe, **kw) -> Engine:
    return Engine(pipe, Sampling(), seed=lambda job, attempt: 100 * job.index + attempt, read=lambda job: job.case,
                  **kw)


def test_engine_batches_progress_and_writes_in_order():
    pipe, seen, ticks = _Fake(), [], []
    res = _engine(pipe, batch_size=3, progress=lambda d, t: ticks.append((d, t))).run(
        _jobs(7), lambda made: seen.append((made.job.key, made.seed, float(made.image.data.flat[0]))))
    assert pipe.calls == [[0, 100, 200], [300, 400, 500], [600]] and res.batches == 3
    assert seen == [(f"v{i}", 100 * i, float(100 * i % 997)) for i in range(7)]
    assert [d for d, _ in ticks] == sorted(d for d, _ in ticks) and ticks[-1] == (7.0, 7)
    assert (1.5, 7) in ticks  # fractional within the first batch: 3 volumes, half their steps


def test_engine_gate_regenerates_with_the_next_seed_then_drops():
    pipe, made = _Fake(), {}

    def gate(job, image, mask):  # v1 is flagged once; v2 always
        return {"flagged": job.key == "v2" or (job.key == "v1" and float(image.data.flat[0]) == 100.0)}

    res = _engine(pipe, batch_size=2, gate=gate, max_retries=2).run(
        _jobs(4), lambda m: made.setdefault(m.job.key, m))
    assert [a["seed"] for a in made["v1"].attempts] == [100, 101] and made["v1"].accepted
    assert [a["seed"] for a in made["v2"].attempts] == [200, 201, 202] and not made["v2"].accepted
    assert made["v0"].attempts == [{"seed": 0, "flagged": False}]
    assert [j.key for j in res.dropped] == ["v2"]
    assert pipe.calls == [[0, 100], [101, 200], [201, 300], [202]]  # a retry goes into the next batch
    # the gate off (privacy_gate False): scored, never regenerated
    made.clear()
    _engine(_Fake(), gate=gate, max_retries=2, enforce_gate=False).run(_jobs(3), lambda m: made.setdefault(m.job.key, m))
    assert made["v2"].accepted and made["v2"].attempts == [{"seed": 200, "flagged": True}]


def test_engine_failures_are_recorded_raised_or_replaced():
    from synthkit.errors import CohortError

    def read(job):
        if job.case == "bad":
            raise CohortError("unreadable", "x.nii.gz")
        return Volume(np.ones((1, 2, 2, 2), np.int16), np.eye(4))

    jobs = [Job("a", "bad", 0, 0), Job("b", "good", 0, 1)]
    eng = Engine(_Fake(), Sampling(), seed=lambda job, a: job.index, read=read)
    res = eng.run(jobs, lambda m: None)
    assert [(j.key, msg) for j, msg in res.failed] == [("a", "x.nii.gz: unreadable")] and [j.key for j in res.made] == ["b"]
    with pytest.raises(CohortError):
        eng.run(jobs, lambda m: None, on_fail=lambda job, err: (_ for _ in ()).throw(err))
    res = eng.run(jobs, lambda m: None, on_fail=lambda job, err: Job(job.key, "good", 1, job.index))
    assert not res.failed and sorted(j.key for j in res.made) == ["a", "b"]


def test_engine_resumes_from_the_manifest_and_shards_across_ranks(tmp_path):
    from synthkit.pipeline.manifest import ManifestStore
    from synthkit.runtime.ddp import DistInfo

    out = tmp_path / "out"
    out.mkdir()

    def store(dist=None):
        return ManifestStore(out / "manifest.json", {"settings": {"s": 1}}, key=lambda e: e["id"],
                             files=lambda e: [e["file"]], dist=dist,
                             document=lambda items, fails: {"settings": {"s": 1}, "items": items})

    def write(made, kill=None):
        if made.job.key == kill:
            raise KeyboardInterrupt  # the run is killed while writing this one
        (out / f"{made.job.key}.txt").write_text(str(made.seed))
        return {"id": made.job.key, "file": f"{made.job.key}.txt"}

    pipe = _Fake()
    with pytest.raises(KeyboardInterrupt):
        _engine(pipe, batch_size=2).run(_jobs(5), lambda m: write(m, kill="v3"), store=store())
    assert [e["id"] for e in json.loads((out / "manifest.json").read_text())["items"]] == ["v0", "v1", "v2"]
    pipe.calls.clear()
    res = _engine(pipe, batch_size=2).run(_jobs(5), write, store=store())
    assert pipe.calls == [[300, 400]] and [j.key for j in res.resumed] == ["v0", "v1", "v2"]
    # DDP: rank r makes jobs r, r + W, ...; each rank's part is taken over by a later run
    for p in out.iterdir():
        p.unlink()
    made = {}
    for rank in (0, 1):
        s = store(DistInfo(rank=rank, world_size=2))
        made[rank] = [j.key for j in _engine(_Fake(), dist=s.dist).run(_jobs(5), write, store=s).made]
    assert made == {0: ["v0", "v2", "v4"], 1: ["v1", "v3"]}
    assert sorted(p.name for p in out.glob(".manifest.rank*.json")) == [".manifest.rank0.json", ".manifest.rank1.json"]
    again = store()
    assert sorted(again.entries) == [f"v{i}" for i in range(5)]
    assert again.finish()["items"][-1]["id"] == "v4" and not list(out.glob(".manifest.rank*.json"))
