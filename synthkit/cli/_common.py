"""Shared CLI plumbing: one-line errors, progress bars, seeding, and the option types every verb
shares (``--device`` and the choice Enums). Nothing heavy imported here."""

from __future__ import annotations

import functools
import os
import re
import sys
from collections.abc import Callable
from enum import Enum
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from synthkit.errors import SynthkitError, UsageError

F = TypeVar("F", bound=Callable[..., Any])

console = Console()
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def fail(message: str, code: int = 1) -> None:
    """Print ``synthkit: error: <message>`` as one line on stderr and exit with ``code``."""
    err_console.print(f"synthkit: error: {message}", markup=False)
    raise typer.Exit(code)


#: The hint for a machine (or GPU) out of memory: the same line for ``MemoryError`` and CUDA.
OUT_OF_MEMORY = "out of memory; try a smaller --batch-size or --shape"


def _is_cuda_out_of_memory(error: BaseException) -> bool:
    """``torch.cuda.OutOfMemoryError`` is a RuntimeError, not a MemoryError; torch is only looked
    up when it is already imported (this module stays light)."""
    torch = sys.modules.get("torch")
    oom = getattr(getattr(torch, "cuda", None), "OutOfMemoryError", None)
    return isinstance(oom, type) and isinstance(error, oom)


def handle_errors(func: F) -> F:
    """Turn library errors raised inside a command into one stderr line and an exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except SynthkitError as e:
            fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            err_console.print("synthkit: interrupted", markup=False)
            raise typer.Exit(130) from None
        except MemoryError:
            fail(OUT_OF_MEMORY, 1)
        except Exception as e:  # a bug, not a user mistake: still one line unless debugging
            if _is_cuda_out_of_memory(e):
                fail(f"CUDA {OUT_OF_MEMORY}", 1)
            if os.environ.get("SYNTHKIT_DEBUG"):
                raise
            fail(
                f"internal error ({type(e).__name__}: {e}); "
                "rerun with SYNTHKIT_DEBUG=1 for the traceback and please report it",
                1,
            )

    return wrapper  # type: ignore[return-value]


def command_group(app: typer.Typer, name: str, help: str) -> typer.Typer:
    """A verb with sub-commands (``synthkit NAME SUB ...``) added to ``app``; shows its help
    when called without a sub-command."""
    sub = typer.Typer(help=help, no_args_is_help=True)
    app.add_typer(sub, name=name)
    return sub


def seed_everything(seed: int) -> None:
    """Seed the global RNGs. Only the CLI does this; the library takes explicit generators."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def make_progress(quiet: bool = False):
    """A rich progress bar (disabled with ``--quiet`` or when stderr is not a terminal... still
    shown on a terminal-less CI log as periodic lines is noise, so it is simply hidden)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        disable=quiet or not sys.stderr.isatty(),
        transient=False,
    )


# ------------------------------------------------------------------------------ --device

DEVICE_HELP = "auto (cuda if available, else cpu), cpu, cuda or cuda:N."
_DEVICE = re.compile(r"auto|cpu|cuda(?::(\d+))?")


def resolve_device(device: str) -> str:
    """The one ``--device`` rule: ``auto`` -> ``cuda`` if a GPU is available, else ``cpu``;
    ``cpu``, ``cuda``, ``cuda:N`` as given. ``UsageError`` (exit 2) for anything else, for
    ``cuda``/``cuda:N`` without a GPU, and for a device number the machine does not have."""
    text = str(device).strip().lower()
    match = _DEVICE.fullmatch(text)
    if match is None:
        raise UsageError(f"--device {device!r}: choose auto, cpu, cuda or cuda:N")
    if text == "cpu":
        return "cpu"
    import torch

    available = torch.cuda.is_available()
    if text == "auto":
        return "cuda" if available else "cpu"
    if not available:
        raise UsageError(f"--device {text}: no CUDA GPU is available on this machine")
    count = torch.cuda.device_count()
    if match.group(1) is not None and int(match.group(1)) >= count:
        raise UsageError(f"--device {text}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return text


def _device_option(value: str) -> str:
    try:
        return resolve_device(value)
    except UsageError as e:
        fail(str(e), e.exit_code)
        raise  # unreachable: fail() exits


#: ``device: DeviceOption = "auto"``: the command receives the resolved device (``cpu``,
#: ``cuda`` or ``cuda:N``); a bad value is one line on stderr and exit code 2.
DeviceOption = Annotated[str, typer.Option("--device", help=DEVICE_HELP, metavar="auto|cpu|cuda|cuda:N",
                                           callback=_device_option)]


# ------------------------------------------------------------------------------ choices

class Choice(str, Enum):
    """A str Enum for option choices (``--help`` lists them); members print as their value."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


class SamplerChoice(Choice):
    """``--sampler``: the samplers of :data:`synthkit.diffusion.SAMPLERS` by name, the one sampler
    enum (listed here so that the CLI imports no torch until a command runs)."""

    DDPM = "ddpm"
    DDIM = "ddim"
    DPMPP = "dpmpp"


class PrecisionChoice(Choice):
    """``--precision``: :attr:`synthkit.config.TrainConfig.precision`."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


class ModelKindChoice(Choice):
    """``train --model``: :data:`synthkit.config.MODEL_TYPES`."""

    DDPM = "ddpm"
    PIX2PIX = "pix2pix"
    DISCOGAN = "discogan"


class PresetChoice(Choice):
    """``--preset``: :data:`synthkit.config.MODEL_PRESETS` (and the GAN presets of the same names)."""

    TINY = "tiny"
    SMALL = "small"
    MEDIUM = "medium"
    PAPER = "paper"


class PredictionChoice(Choice):
    """``--prediction``: :attr:`synthkit.config.DiffusionConfig.prediction`."""

    EPSILON = "epsilon"
    V = "v"


class LossChoice(Choice):
    """``--loss``: :attr:`synthkit.config.DiffusionConfig.loss`."""

    L1 = "l1"
    L2 = "l2"


class LabelSpaceChoice(Choice):
    """``sample --label-space``: by the cohort's label names when they match the run's (auto), in
    raw file labels, or already in the model's label values."""

    AUTO = "auto"
    RAW = "raw"
    NETWORK = "network"


def value_of(choice: Choice | str | None) -> str | None:
    """The plain string of a choice (None stays None), for the library."""
    return None if choice is None else str(choice.value if isinstance(choice, Enum) else choice)



class SamplingPrecisionChoice(Choice):
    """``--precision`` of the verbs that sample (``sample``, ``augment``, ``anonymize``)."""

    FP32 = "fp32"
    BF16 = "bf16"
    FP16 = "fp16"


SAMPLING_PRECISION_HELP = ("Precision of the network calls: fp32 (default, the tested path), bf16 (autocast; fp32 where "
                           "bf16 is not native) or fp16 (CUDA only). Recorded in the manifest.")


class AutoencoderPresetChoice(Choice):
    """``autoencoder train --preset``: :data:`synthkit.config.AUTOENCODER_PRESETS` (kept equal by a test)."""

    TINY = "tiny"
    SMALL = "small"
    DEMO = "demo"


class AutoencoderPrecisionChoice(Choice):
    """``autoencoder train/eval --precision``: the autoencoder trains in fp32 or bf16."""

    FP32 = "fp32"
    BF16 = "bf16"


class LatentNormChoice(Choice):
    """``train --latent-norm``: how a latent run normalises its latents (``latent_norm`` in its config)."""

    CHANNEL = "channel"
    GLOBAL = "global"


class IntensityBoundsChoice(Choice):
    """``--intensity-bounds``: :attr:`synthkit.config.PreprocessConfig.intensity_bounds`."""

    PER_LABEL = "per_label"
    HEAD = "head"


INTENSITY_BOUNDS_HELP = ("Where the clip percentiles are taken: per_label (default for new runs: also inside each label, "
                         "so the brightest label, e.g. an enhancing rim, is not flattened) or head (all labels "
                         "together, as runs made before the option).")


class FeaturesChoice(Choice):
    """``evaluate --features``: :data:`synthkit.metrics.extractors.FEATURE_CHOICES` (kept equal by a test)."""

    AUTO = "auto"
    DEEPBET = "deepbet"
    RANDOM = "random"
    MEDICALNET_RESNET10 = "medicalnet-resnet10"
    MEDICALNET_RESNET18 = "medicalnet-resnet18"
    MEDICALNET_RESNET34 = "medicalnet-resnet34"
    MEDICALNET_RESNET50 = "medicalnet-resnet50"


class BaselineChoice(Choice):
    """``augment --baseline``: the baselines that need no model."""

    CLASSIC = "classic"


def steps_help(default: str = "all T") -> str:
    """The ``--steps`` help, correct for every sampler."""
    return (f"Sampling steps for ddim and dpmpp (default: {default}); ddpm always runs all T steps of the "
            "schedule (as the paper); GAN runs make one pass.")


def deprecated(old: str, new: str) -> None:
    """One stderr line for an old spelling that still works (for one release); rank 0 only under torchrun."""
    if os.environ.get("RANK", "0") != "0":
        return
    err_console.print(f"synthkit: deprecated: {old} will be removed in the next release; use {new}", markup=False)


class RecipeChoice(Choice):
    """``train/autoencoder train --recipe``: :data:`synthkit.recipes.RECIPES` (kept equal by a test)."""

    DEMO_PIXEL = "demo-pixel"
    DEMO_LATENT = "demo-latent"
    PAPER_HEAD_PIXEL = "paper-head-pixel"
    PAPER_HEAD_LATENT = "paper-head-latent"
    BRATS_PIXEL = "brats-pixel"
    BRATS_LATENT = "brats-latent"


RECIPE_HELP = ("Named settings to start from (flags given with it override them; recorded in config.json): "
               "demo-pixel / demo-latent (the shipped CPU demo models), paper-head-pixel / paper-head-latent "
               "(128^3 whole heads; the paper's 100k steps), brats-pixel / brats-latent (192x192x144 BraTS crops). "
               "Latent recipes: `autoencoder train --recipe NAME` first, then `train --recipe NAME --autoencoder AE`. "
               "Details and cost per step: README, Recipes.")
