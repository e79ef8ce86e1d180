"""Recipes: named, documented training settings for real cohorts and for the CPU demo.

A recipe is a starting :class:`~synthkit.config.RunConfig` (``synthkit train --recipe NAME``) and,
for latent recipes, the :class:`~synthkit.config.AutoencoderRunConfig` of its autoencoder
(``synthkit autoencoder train --recipe NAME``). Flags given next to ``--recipe`` override it; the
run's ``config.json`` records the recipe's name (``"recipe"``; runs written before recipes load
with ``null``).

==================  ======  =================  ===========================================
name                kind    image grid         what it is
==================  ======  =================  ===========================================
demo-pixel          pixel   32^3               the shipped ``demo`` model's settings (CPU)
demo-latent         latent  128^3 (32^3 lat.)  the shipped ``demo-latent`` settings (CPU)
paper-head-pixel    pixel   128^3              Med-DDPM's whole-head setup (paper preset)
paper-head-latent   latent  128^3 (32^3 lat.)  the same heads in a 4x latent space
brats-pixel         pixel   192x192x144        Med-DDPM's BraTS crops (4 modalities)
brats-latent        latent  192x192x144        BraTS crops in a 4x latent space
==================  ======  =================  ===========================================

The paper (Dorjsembe et al.) trained for 100,000 iterations with Adam at 1e-5, then 1e-6, batch 1,
L1 loss on epsilon, cosine schedule with T = 250; the ``paper-*`` and ``brats-*`` pixel recipes
are exactly that. The latent recipes are synthkit's (the paper has no latent model): the
settings that trained ``demo-latent`` (the mask at full resolution on the latent grid, 10 % mask
dropout, the tumour weighted x10 where the labels are head and tumour; new autoencoders use
per-label intensity bounds), scaled to the paper's step count. The demo recipes are
what the shipped CPU models used: small networks and short runs, good for the demo cohort and
for checking an installation, not for a real cohort (:func:`demo_settings_note` says so).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from synthkit.config import (
    AutoencoderRunConfig,
    DiffusionConfig,
    ModelConfig,
    PreprocessConfig,
    RunConfig,
    TrainConfig,
    autoencoder_config,
    model_config,
)
from synthkit.errors import UsageError

#: The paper's number of training iterations.
PAPER_STEPS = 100_000

#: A cohort with more cases than this is "much larger" than the demo's 16 (see demo_settings_note).
DEMO_COHORT_CASES = 16
MUCH_LARGER = 4


@dataclass(frozen=True)
class AutoencoderRecipe:
    """The autoencoder part of a latent recipe (see :class:`~synthkit.config.AutoencoderRunConfig`)."""

    preset: str = "small"
    latent_channels: int = 8
    crop: int = 64
    steps: int = 4400
    batch_size: int = 2
    lr: float = 1e-3
    lr_final: float = 2e-4
    precision: Literal["fp32", "bf16"] = "fp32"


@dataclass(frozen=True)
class Recipe:
    """One named setting. ``model``: the denoiser preset, with ``model_overrides`` on top;
    ``shape``: the image grid (D, H, W); ``cost``: measured cost per step, where measured."""

    name: str
    summary: str
    kind: Literal["pixel", "latent"]
    shape: tuple[int, int, int]
    model: str
    steps: int
    batch_size: int
    lr: float
    lr_final: float
    lr_drop_fraction: float = 0.5
    prediction: Literal["epsilon", "v"] = "epsilon"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    grad_checkpoint: bool = False
    label_map: dict[str, int] | None = None
    brain_label: int | None = None
    model_overrides: dict[str, Any] = field(default_factory=dict)
    cond_factor: int = 1
    label_weights: tuple[float, ...] | None = None
    cond_drop: float = 0.0
    autoencoder: AutoencoderRecipe | None = None
    cpu_demo: bool = False
    cost: str = "not measured yet"

    def run_config(self) -> RunConfig:
        """The RunConfig ``synthkit train --recipe NAME`` starts from (channels and mask classes
        are fitted to the cohort by the trainer, as always)."""
        model: ModelConfig = model_config(self.model, **self.model_overrides)
        model = dataclasses.replace(model, gradient_checkpointing=self.grad_checkpoint, cond_factor=self.cond_factor)
        pre = PreprocessConfig(target_shape=self.shape, label_map=self.label_map, brain_label=self.brain_label)
        train = TrainConfig(steps=self.steps, batch_size=self.batch_size, lr=self.lr, lr_final=self.lr_final,
                            lr_drop_fraction=self.lr_drop_fraction, precision=self.precision,
                            checkpoint_every=min(1000, max(250, self.steps // 100)),
                            label_weights=self.label_weights, cond_drop=self.cond_drop)
        return RunConfig(model=model, diffusion=DiffusionConfig(prediction=self.prediction), preprocess=pre,
                         train=train, preset=self.model, recipe=self.name)

    def autoencoder_config(self) -> AutoencoderRunConfig:
        """The AutoencoderRunConfig ``synthkit autoencoder train --recipe NAME`` starts from."""
        if self.autoencoder is None:
            raise UsageError(f"recipe {self.name!r} is a pixel-space recipe: it has no autoencoder "
                             f"(latent recipes: {', '.join(n for n, r in RECIPES.items() if r.kind == 'latent')})")
        a = self.autoencoder
        ae = autoencoder_config(a.preset, latent_channels=a.latent_channels)
        pre = PreprocessConfig(target_shape=self.shape, label_map=self.label_map, brain_label=self.brain_label)
        base = AutoencoderRunConfig().train
        train = dataclasses.replace(base, steps=a.steps, batch_size=a.batch_size, lr=a.lr, lr_final=a.lr_final,
                                    precision=a.precision)
        return AutoencoderRunConfig(autoencoder=ae, preprocess=pre, train=train, crop=a.crop, preset=a.preset,
                                    recipe=self.name)


_BRATS = {"label_map": {"4": 3}, "brain_label": 4}
_PAPER_TRAIN = {"steps": PAPER_STEPS, "batch_size": 1, "lr": 1e-5, "lr_final": 1e-6}
_LATENT_AE = AutoencoderRecipe(steps=20_000)
# issue 20's levers for latent denoisers: the full-resolution mask and 10 % mask dropout (label
# weights depend on the labels, so only the head recipes set them: head x1, tumour x10)
_LEVERS: dict[str, Any] = {"cond_factor": 4, "cond_drop": 0.1}

RECIPES: dict[str, Recipe] = {r.name: r for r in (
    Recipe("demo-pixel", "the shipped 32^3 demo model: small preset, v-prediction, 12,000 steps (CPU)",
           "pixel", (32, 32, 32), "small", steps=12_000, batch_size=4, lr=2e-4, lr_final=2e-5,
           lr_drop_fraction=0.7, prediction="v", precision="bf16", cpu_demo=True,
           cost="~0.6 s/step on a 2-core CPU with native bf16 (batch 4)"),
    Recipe("demo-latent", "the shipped demo-latent model: small autoencoder (8 latent channels) and small "
           "denoiser on 32^3 latents of 128^3 heads, the full-resolution mask, tumour x10, 10 % mask dropout, "
           "10,000 steps (CPU)",
           "latent", (128, 128, 128), "small", steps=10_000, batch_size=4, lr=4e-4, lr_final=4e-5,
           lr_drop_fraction=0.75, prediction="v", precision="bf16", cpu_demo=True, **_LEVERS,
           label_weights=(1.0, 10.0), autoencoder=AutoencoderRecipe(precision="bf16"),
           cost="denoiser ~0.9 s/step (batch 4, bf16, 1 CPU thread); autoencoder ~1.8 s/step (bf16) / "
                "4.1 s/step (fp32), 64^3 crops x2"),
    Recipe("paper-head-pixel", "Med-DDPM's whole-head setup: paper preset (40M parameters) at 128^3, "
           "Adam 1e-5 then 1e-6, batch 1, L1 on epsilon, T = 250, 100k steps",
           "pixel", (128, 128, 128), "paper", **_PAPER_TRAIN,
           cost="CPU, 1 thread: 244 s/step fp32, 124 s/step bf16 (18.7 / 10.0 GiB; 11.0 GiB fp32 with "
                "--grad-checkpoint); GPU not measured yet"),
    Recipe("paper-head-latent", "the same heads in a 4x latent space: small autoencoder (8 latent channels), "
           "paper denoiser on 32^3 latents, v-prediction, 100k steps",
           "latent", (128, 128, 128), "paper", steps=PAPER_STEPS, batch_size=4, lr=1e-4, lr_final=1e-5,
           lr_drop_fraction=0.75, prediction="v", autoencoder=_LATENT_AE, **_LEVERS, label_weights=(1.0, 10.0),
           cost="CPU, 1 thread, batch 1: denoiser 2.9 s/step fp32, 1.8 s/step bf16 (0.7 GiB); autoencoder "
                "4.1 s/step fp32; GPU not measured yet"),
    Recipe("brats-pixel", "Med-DDPM's BraTS setup: 192x192x144 crops of the 4 modalities, labels "
           "4 -> 3 plus a brain label 4, paper preset, 100k steps, activation checkpointing",
           "pixel", (192, 192, 144), "paper", **_PAPER_TRAIN, grad_checkpoint=True, **_BRATS,
           cost="not measured (2.5x the voxels of 128^3: roughly 2.5x paper-head-pixel's step); GPU not measured yet"),
    Recipe("brats-latent", "BraTS crops in a 4x latent space (48x48x36): small autoencoder, a 3-level "
           "paper-width denoiser (36 is not divisible by 8), v-prediction, 100k steps",
           "latent", (192, 192, 144), "paper", steps=PAPER_STEPS, batch_size=4, lr=1e-4, lr_final=1e-5,
           lr_drop_fraction=0.75, prediction="v", autoencoder=_LATENT_AE, **_BRATS, **_LEVERS,
           model_overrides={"channel_mults": (1, 2, 4), "attention_levels": (False, False, True)},
           cost="not measured; GPU not measured yet"),
)}

RecipeName = Literal["demo-pixel", "demo-latent", "paper-head-pixel", "paper-head-latent", "brats-pixel",
                     "brats-latent"]


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name`` (UsageError naming the choices otherwise)."""
    try:
        return RECIPES[name]
    except KeyError:
        raise UsageError(f"unknown recipe {name!r}; choose one of {', '.join(RECIPES)}") from None


def recipe_help() -> str:
    """One line per recipe, for ``--help``."""
    return "; ".join(f"{r.name}: {r.summary}" for r in RECIPES.values())


def demo_settings_note(recipe: str | None, preset: str, steps: int, shape: tuple[int, ...],
                       n_cases: int, *, any_grid: bool = False) -> str | None:
    """One line when a run trains with the CPU demo's settings (a demo recipe, or no recipe with
    the small/tiny preset at 32^3 or less; at any grid with ``any_grid``, as for the autoencoder)
    on a cohort much larger than the demo's; None otherwise."""
    r = RECIPES.get(recipe) if recipe else None
    demo_like = (r is not None and r.cpu_demo) or (recipe is None and preset in ("small", "tiny")
                                                  and (any_grid or max(shape) <= 32))
    if not demo_like or n_cases <= DEMO_COHORT_CASES * MUCH_LARGER:
        return None
    what = f"recipe {recipe}" if r is not None else f"preset {preset} at {'x'.join(map(str, shape))}"
    return (f"note: {what}, {steps:,} steps are the CPU demo's settings, on a cohort of {n_cases} cases "
            f"(the demo has {DEMO_COHORT_CASES}); for a real cohort see --recipe (paper-head-*, brats-*)")
