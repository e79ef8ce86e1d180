"""The state the demo stages share: stage sizes (:class:`DemoSizes`, :data:`QUICK`), one
stage's outcome (:class:`Stage`), the run context (:class:`Context`) and :func:`stage`, the
context manager that times a stage, prints its line and turns a failure into a failed stage."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from synthkit.errors import SynthkitError, UsageError


@dataclass(frozen=True)
class DemoSizes:
    """How much work each stage does. The defaults take about 8 minutes on 2 CPU cores with the
    shipped ``demo-latent`` model at 128^3 (fp32) and about 5 with the
    ``small`` model at 32^3; :data:`QUICK` is smaller still."""

    n_cases: int = 16  # demo cohort size = synthetic volumes in 'sample'
    n_anonymized: int = 4  # the first held-out masks 'anonymize' takes (~10 CPU-s a 128^3 volume, gate included)
    steps: int = 30  # DDIM steps (capped at the model's T)
    n_diversity: int = 5  # samples for one mask
    n_shown: int = 4  # real/synthetic pairs on the page
    n_perturbed: int = 4  # perturbed masks with their generated images
    perturb_ops: str = "move+deform"
    n_boot: int = 100  # bootstrap replicates of FID/MMD
    diversity_pairs: int = 30  # random pairs for the within-set MS-SSIM
    seg_steps: int = 600  # training steps of each label-fidelity segmenter half

    def __post_init__(self) -> None:
        if self.n_cases < 4:
            raise UsageError("the demo needs at least 4 cases (FID, privacy calibration)")
        if min(self.steps, self.n_anonymized, self.n_diversity, self.n_shown, self.n_perturbed, self.n_boot,
               self.diversity_pairs, self.seg_steps) < 1:
            raise UsageError("demo stage sizes must be at least 1")


QUICK = DemoSizes(n_cases=6, steps=10, n_diversity=3, n_shown=3, n_perturbed=2, n_boot=20, diversity_pairs=10,
                  seg_steps=400)


@dataclass
class Stage:
    """One stage's outcome; ``info`` holds what the page shows (paths relative to OUT)."""

    key: str
    title: str
    status: str = "pending"  # ok | failed | skipped
    seconds: float = 0.0
    cpu_seconds: float = 0.0  # process CPU time (all threads): wall time is meaningless on a busy machine
    summary: str = ""
    error: str | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    out: Path
    seed: int
    sizes: DemoSizes
    device: str
    progress: Any
    say: Callable[[str], None]
    cohort: Any = None
    train_cohort: Path | None = None  # the model's training cohort (privacy reference; None: unknown)
    gen: Any = None
    steps: int = 0
    stages: dict[str, Stage] = field(default_factory=dict)
    overall: Any = None  # the progress task counting stages

    def stage_bar(self, title: str | None, total: int | None = None) -> None:
        """Show ``title`` on the stages bar (first call: create it); at a stage's end (title
        None) drop that stage's own bars and advance the stages bar."""
        p = self.progress
        if p is None or not hasattr(p, "add_task"):
            return
        if self.overall is None:
            self.overall = p.add_task("demo", total=total)
        if title is not None:
            p.update(self.overall, description=f"demo: {title}")
            return
        for t in list(p.task_ids):
            if t != self.overall:
                p.remove_task(t)
        p.advance(self.overall)

    def rel(self, p: Path) -> str:
        return Path(os.path.relpath(p, self.out)).as_posix()

    def task(self, name: str, total: int) -> Callable[[], None]:
        if self.progress is None or not hasattr(self.progress, "add_task"):
            return lambda: None
        t = self.progress.add_task(name, total=total)
        return lambda: self.progress.advance(t)


@contextmanager
def stage(ctx: Context, key: str, title: str, *, fatal: bool = False) -> Iterator[Stage]:
    st = ctx.stages[key] = Stage(key, title)
    ctx.stage_bar(title.lower())
    t0, c0 = time.perf_counter(), time.process_time()
    try:
        yield st
        st.status = "ok"
    except Exception as e:
        st.status, st.error = "failed", str(e).replace("\n", " ") or type(e).__name__
        if not isinstance(e, SynthkitError):
            st.error = f"{type(e).__name__}: {st.error}"
        if fatal or os.environ.get("SYNTHKIT_DEBUG") or isinstance(e, (MemoryError, KeyboardInterrupt)):
            raise
    finally:
        st.seconds, st.cpu_seconds = time.perf_counter() - t0, time.process_time() - c0
        n = len(ctx.stages)
        ctx.stage_bar(None)
        if st.status == "ok":
            ctx.say(f"[{n}] {key}: {st.summary} ({st.seconds:.1f} s)")
        else:
            ctx.say(f"[{n}] {key}: FAILED: {st.error} ({st.seconds:.1f} s)")
