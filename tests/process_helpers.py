"""Shared by the kill -9 resume tests: start a training command and SIGKILL it mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path


def kill_after_log_lines(cmd: list[str], run: Path, lines: int = 5, timeout: float = 120.0) -> None:
    """Run ``cmd`` (a training command writing ``run/log.jsonl``) with one torch thread, SIGKILL it
    once the log has ``lines`` entries, and check that it died from the signal (not by finishing
    or failing first)."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            log = run / "log.jsonl"
            if log.exists() and sum(1 for line in log.read_text().splitlines() if line.strip()) >= lines:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
