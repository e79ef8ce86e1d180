"""Multi-process training (DDP, gloo on CPU): two ranks, identical weights, one valid run folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_training_helpers import write_phantom_cohort

from synthkit.runtime import checkpoint as ckpt
from synthkit.training.data import StepBatchSampler
from synthkit.training.runlog import read_log


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, cohort: str, run: str, out: str) -> None:
    # the same environment torchrun sets up
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from safetensors.torch import save_file
    from test_training import tiny_cfg

    from synthkit.jobs.sample import sample_masks
    from synthkit.pipeline import load
    from synthkit.runtime.ddp import barrier
    from synthkit.training.trainer import Trainer

    t = Trainer(cohort, run, tiny_cfg(steps=4, batch_size=1))
    assert t.dist.world_size == world and t.dist.rank == rank
    t.run()
    save_file({**{f"model/{k}": v.contiguous() for k, v in t.model.state_dict().items()},
               **{f"ema/{k}": v.contiguous() for k, v in t.ema.state_dict().items()}},
              str(Path(out) / f"rank{rank}.safetensors"))
    barrier(t.dist)
    sample_masks(load(run), cohort, Path(out) / "synth", per_mask=2, sampler="ddim", steps=2, dist=t.dist)
    t.close()


def test_two_process_ddp_training_and_sampling(tmp_path):
    from safetensors.torch import load_file

    cohort = write_phantom_cohort(tmp_path / "cohort", n=3)
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    torch.multiprocessing.spawn(_worker, args=(2, _free_port(), str(cohort), str(run), str(out)), nprocs=2,
                                join=True)
    r0, r1 = load_file(str(out / "rank0.safetensors")), load_file(str(out / "rank1.safetensors"))
    assert r0.keys() == r1.keys()
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k
    # one valid run folder written by rank 0
    assert [r["step"] for r in read_log(run / "log.jsonl")] == [1, 2, 3, 4]
    state = ckpt.load_checkpoint(ckpt.latest_checkpoint(run))
    assert state.step == 4 and state.info["world_size"] == 2
    assert set(state.rng) == {0, 1}  # both ranks' RNG states, for an exact resume
    assert not torch.equal(state.rng[0]["gen_train"], state.rng[1]["gen_train"])  # different noise per rank
    for k, v in state.ema.items():
        assert torch.equal(v, r0[f"ema/{k}"])
    # sampling split across the ranks, one manifest
    import json

    manifest = json.loads((out / "synth" / "manifest.json").read_text())
    assert sorted((e["case"], e["k"]) for e in manifest["items"]) == [(f"case_{i:03d}", k) for i in range(3)
                                                                       for k in range(2)]
    assert len(list((out / "synth" / "imagesTr").iterdir())) == 6


def test_batch_order_is_split_across_ranks_and_resumable():
    # 16 items; one optimizer step = 2 micro-batches x 2 ranks x 2 = 8 samples: 2 steps per epoch
    kw = {"batch_size": 2, "grad_accum": 2, "seed": 1, "total_steps": 6}
    full = [list(StepBatchSampler(16, start_step=0, rank=r, world_size=2, **kw)) for r in range(2)]
    assert len(full[0]) == 12 and all(len(b) == 2 for b in full[0])
    for epoch in range(3):
        seen = [i for r in range(2) for micro in range(4 * epoch, 4 * epoch + 4) for i in full[r][micro]]
        assert sorted(seen) == list(range(16))  # ranks see disjoint samples; an epoch covers all
    assert full[0][:4] != full[0][4:8]  # reshuffled every epoch
    resumed = list(StepBatchSampler(16, start_step=4, rank=1, world_size=2, **kw))
    assert resumed == full[1][8:]
    again = list(StepBatchSampler(16, start_step=0, rank=0, world_size=2, **kw))
    assert again == full[0]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="no torchrun")
def test_torchrun_cli(tmp_path):
    cohort = write_phantom_cohort(tmp_path / "cohort", n=2)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "synthkit", "train", str(cohort), "--out",
           str(tmp_path / "run"), "--preset", "tiny", "--shape", "16", "16", "16", "--timesteps", "10",
           "--steps", "2", "--quiet"]
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert [x["step"] for x in read_log(tmp_path / "run" / "log.jsonl")] == [1, 2]
    assert ckpt.load_checkpoint(ckpt.latest_checkpoint(tmp_path / "run")).info["world_size"] == 2
