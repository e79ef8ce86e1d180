"""Frozen dataclass configurations, saved as ``config.json`` next to the weights.

Everything needed to rebuild a model and its preprocessing is here; a run folder is fully
described by one :class:`RunConfig`. Unknown keys are an error (a typo in a config file must
not be silently ignored). Presets (``tiny``, ``small``, ``paper``) are named configs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

from synthkit import _codec
from synthkit.errors import SynthkitError

T = TypeVar("T")


class ConfigError(SynthkitError):
    """A configuration file or dictionary does not describe a valid config."""


def from_dict(cls: type[T], data: dict[str, Any], where: str = "config") -> T:
    """Build dataclass ``cls`` from a dict, refusing unknown keys and wrong types
    (:class:`ConfigError`; the rules are :func:`synthkit._codec.from_dict`'s)."""
    return _codec.from_dict(cls, data, where, ConfigError)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain-JSON form of a config dataclass (tuples become lists)."""
    return _codec.to_dict(cfg)


def _read_json(path: str | Path) -> Any:
    """The parsed JSON of a config file; ConfigError (naming the file) when missing or not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError("no such config file", Path(path)) from None
    except (OSError, ValueError) as e:
        raise ConfigError(f"not a valid JSON config ({e})", Path(path)) from None


def _save_json(cfg: Any, path: str | Path) -> Path:
    """Write dataclass ``cfg`` as JSON, atomically."""
    from synthkit.io.atomic import write_json

    return write_json(path, to_dict(cfg))


@dataclass(frozen=True)
class ModelConfig:
    """The 3D conditional U-Net denoiser.

    ``in_channels = image_channels + mask_classes * cond_factor**3`` (one-hot mask, background
    dropped); ``out_channels = image_channels``. ``attention_levels[i]`` switches self-attention
    on at U-Net level ``i`` (level ``i`` works at 1/2**i of the input size); the middle block
    always has attention. ``cond_factor`` (latent runs): the mask reaches the latent grid by
    average pooling down to ``cond_factor`` times the latent resolution and then space-to-depth
    by ``cond_factor`` (each latent voxel sees its ``cond_factor**3`` sub-blocks as channels);
    1, the default, is plain average pooling to the latent grid; the autoencoder's factor is the
    full-resolution mask, losslessly (issue 20, item 2).
    """

    image_channels: int = 1
    mask_classes: int = 2
    base_channels: int = 64
    channel_mults: tuple[int, ...] = (1, 1, 2, 3, 4)
    num_res_blocks: int = 1
    attention_levels: tuple[bool, ...] = (False, False, False, True, False)
    num_heads: int = 1
    norm_groups: int = 32
    dropout: float = 0.0
    gradient_checkpointing: bool = False
    cond_factor: int = 1

    @property
    def cond_channels(self) -> int:
        """Channels of the condition joined to the noisy input."""
        return self.mask_classes * self.cond_factor**3

    @property
    def in_channels(self) -> int:
        return self.image_channels + self.cond_channels

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mults) - 1)


@dataclass(frozen=True)
class DiffusionConfig:
    """Gaussian diffusion (Ho et al. 2020) with the cosine schedule (Nichol & Dhariwal 2021)."""

    timesteps: int = 250
    schedule: Literal["cosine", "linear"] = "cosine"
    cosine_s: float = 0.008
    prediction: Literal["epsilon", "v"] = "epsilon"
    loss: Literal["l1", "l2"] = "l1"


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw cases become network inputs, and back.

    ``mask_labels`` are the label values that become one-hot channels, in order (background 0
    is always dropped). ``label_map`` remaps raw label values first (e.g. BraTS ``{4: 3}``).
    ``brain_label`` adds a label for voxels inside the head/brain that carry no other label,
    found by thresholding the first image channel (as the paper does for BraTS).

    ``intensity_bounds``: where the ``clip_percentiles`` are taken before the map to [-1, 1].
    ``"head"`` (runs written before the option): over all labelled voxels together, which
    flattens a label that is the brightest (or darkest) tissue, e.g. the enhancing tumour rim on
    T1ce. ``"per_label"`` (the default for new runs): the widest of those bounds and the same
    percentiles taken inside each label on its own, so no label loses more than its own tail
    (``benchmarks/results/intensity_norm.md``). A config file without the key loads as
    ``"head"``, the rule it was made with.
    """

    _LEGACY_DEFAULTS: ClassVar[dict[str, Any]] = {"intensity_bounds": "head"}

    target_shape: tuple[int, int, int] = (32, 32, 32)
    target_spacing: tuple[float, float, float] | None = None
    orientation: str = "RAS"
    clip_percentiles: tuple[float, float] = (0.5, 99.5)
    mask_labels: tuple[int, ...] = (1, 2)
    label_map: dict[str, int] | None = None
    brain_label: int | None = None
    brain_threshold: float = 0.05
    intensity_bounds: Literal["head", "per_label"] = "per_label"


@dataclass(frozen=True)
class TrainConfig:
    """The training loop. Defaults follow the paper (Adam, 1e-5 then 1e-6 for the second half)."""

    steps: int = 1000
    batch_size: int = 1
    lr: float = 1e-5
    lr_final: float = 1e-6
    lr_drop_fraction: float = 0.5
    weight_decay: float = 0.0
    ema_decay: float = 0.999
    grad_accum: int = 1
    grad_clip: float | None = 1.0
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    checkpoint_every: int = 500
    preview_every: int = 0
    log_every: int = 1
    seed: int = 0
    num_workers: int = 0
    # issue 20: per-label loss weights (one per mask class, in mask_labels order; a voxel's weight
    # is 1 + sum_k (w_k - 1) * (its fraction of label k), the loss a weighted mean), and the
    # fraction of training samples whose condition is zeroed (classifier-free guidance)
    label_weights: tuple[float, ...] | None = None
    cond_drop: float = 0.0


@dataclass(frozen=True)
class DataConfig:
    """What the cohort looked like: names for channels and labels (no patient information)."""

    channel_names: tuple[str, ...] = ("image",)
    labels: dict[str, int] = field(default_factory=lambda: {"background": 0, "head": 1, "tumour": 2})


@dataclass(frozen=True)
class GanConfig:
    """The GAN baselines of the paper: Pix2Pix (Isola et al. 2017) and DiscoGAN (Kim et al.
    2017), adapted to 3D (see synthkit.networks.gan and synthkit.training.gan).

    Generator: a U-Net of ``depth`` stride-2 4^3 convolutions (``base_channels`` doubling up to
    ``max_mult`` times), skip connections, dropout ``dropout`` in up to three decoder blocks
    next to the bottleneck; the volume must be divisible by ``2**depth``. Discriminator: a 3D
    PatchGAN with ``disc_layers`` stride-2 convolutions. Losses: adversarial (``adv_loss``:
    ``"lsgan"``, the mean squared error of Mao et al., as the Med-DDPM paper trained its
    baselines; or ``"bce"``) + ``lambda_l1`` x L1(G(mask), image) (paired; Isola et al. use 100;
    0 gives the unpaired DiscoGAN) + for DiscoGAN ``lambda_recon`` x the L1 reconstruction
    losses of both cycles. Adam with ``lr`` and ``betas`` (paper: 2e-4, (0.5, 0.999)), constant
    (``lr_decay="constant"``) or, as Isola et al., linearly to 0 over the second half
    (``"linear"``). ``sample_dropout``: keep dropout on when sampling (the only noise source of
    Pix2Pix, seeded per volume); off gives one deterministic output per mask.
    """

    base_channels: int = 64
    depth: int = 4
    max_mult: int = 8
    disc_channels: int = 64
    disc_layers: int = 3
    norm: Literal["instance", "batch"] = "instance"
    dropout: float = 0.5
    sample_dropout: bool = True
    adv_loss: Literal["lsgan", "bce"] = "lsgan"
    lambda_l1: float = 100.0
    lambda_recon: float = 10.0
    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    lr_decay: Literal["constant", "linear"] = "constant"


@dataclass(frozen=True)
class RunConfig:
    """Everything about a run. ``model_type``: ``"ddpm"`` (Med-DDPM: ``model`` + ``diffusion``)
    or one of the GAN baselines ``"pix2pix"`` / ``"discogan"`` (``gan``; ``model`` then only
    carries the channel counts). Old config files without these keys load as ``"ddpm"``.
    ``"latent"``: Med-DDPM on the latents of the autoencoder described by ``autoencoder`` (see
    synthkit.training.autoencoder_latent; ``preprocess`` is the image grid, ``model`` the denoiser
    on the latent grid; ``latent_norm``/``latent_shift``/``latent_scale``: how its scaled latents
    are standardised per channel before diffusion)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    data: DataConfig = field(default_factory=DataConfig)
    preset: str = "custom"
    synthkit_version: str = "0.1.0"
    model_type: Literal["ddpm", "pix2pix", "discogan", "latent"] = "ddpm"
    gan: GanConfig = field(default_factory=GanConfig)
    autoencoder: AutoencoderRunConfig | None = None
    # latent runs: "channel" standardises each latent channel with the training latents' own
    # mean/std (latent_shift/latent_scale, measured when training starts); "global" uses only the
    # autoencoder's scale factor (runs made before per-channel statistics load as "global")
    latent_norm: Literal["global", "channel"] = "global"
    latent_shift: tuple[float, ...] | None = None
    latent_scale: tuple[float, ...] | None = None
    # the synthkit.recipes name the run started from (`--recipe`); None: none (or a run made before recipes)
    recipe: str | None = None

    def save(self, path: str | Path) -> Path:
        return _save_json(self, path)

    @classmethod
    def load(cls, path: str | Path) -> RunConfig:
        return from_dict(cls, _read_json(path), where=str(path))


MODEL_PRESETS: dict[str, dict[str, Any]] = {
    # The published Med-DDPM configuration (40,226,433 parameters for 1 image + 2 mask channels).
    "paper": {
        "base_channels": 64,
        "channel_mults": (1, 1, 2, 3, 4),
        "num_res_blocks": 1,
        "attention_levels": (False, False, False, True, False),
        "num_heads": 1,
        "norm_groups": 32,
    },
    # About 2.5M parameters (2,469,105 for 1+2 channels); one 32^3 denoiser call takes ~0.06 s
    # in bf16 on 2 CPU cores, so DDIM-50 samples a 32^3 volume in a few seconds.
    "small": {
        "base_channels": 16,
        "channel_mults": (1, 2, 3, 4),
        "num_res_blocks": 1,
        "attention_levels": (False, False, False, True),
        "num_heads": 1,
        "norm_groups": 8,
    },
    # Between small and paper (about 4x small's parameters and cost per step): for latent runs
    # whose small denoiser under-fits (issue 20).
    "medium": {
        "base_channels": 32,
        "channel_mults": (1, 2, 3, 4),
        "num_res_blocks": 1,
        "attention_levels": (False, False, False, True),
        "num_heads": 1,
        "norm_groups": 8,
    },
    # For unit tests: 16^3 volumes, 8-channel networks.
    "tiny": {
        "base_channels": 8,
        "channel_mults": (1, 2),
        "num_res_blocks": 1,
        "attention_levels": (False, True),
        "num_heads": 1,
        "norm_groups": 4,
    },
}


def model_config(preset: str, image_channels: int = 1, mask_classes: int = 2, **overrides: Any) -> ModelConfig:
    """The named preset for the given channel counts (unknown preset -> ConfigError)."""
    if preset not in MODEL_PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(MODEL_PRESETS)}")
    kw = dict(MODEL_PRESETS[preset])
    kw.update(overrides)
    return ModelConfig(image_channels=image_channels, mask_classes=mask_classes, **kw)


MODEL_TYPES: tuple[str, ...] = ("ddpm", "pix2pix", "discogan")

# GAN baseline sizes under the same preset names (generator / discriminator widths and depths).
GAN_PRESETS: dict[str, dict[str, Any]] = {
    "paper": {"base_channels": 64, "depth": 4, "disc_channels": 64, "disc_layers": 3},
    "small": {"base_channels": 16, "depth": 4, "disc_channels": 16, "disc_layers": 3},
    "tiny": {"base_channels": 8, "depth": 3, "disc_channels": 8, "disc_layers": 2},  # 16^3 unit tests
}


def gan_config(preset: str, **overrides: Any) -> GanConfig:
    """The named GAN preset (unknown preset -> ConfigError)."""
    if preset not in GAN_PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(GAN_PRESETS)}")
    kw = dict(GAN_PRESETS[preset])
    kw.update(overrides)
    return GanConfig(**kw)


# --------------------------------------------------------------------------- autoencoder (latent Med-DDPM)


@dataclass(frozen=True)
class AutoencoderConfig:
    """The KL autoencoder of latent diffusion (see synthkit.networks.autoencoder).

    ``channels[i]``: width at level ``i`` (level ``i`` works at 1/2**i of the input size), so
    the latent grid is 1/2**(len(channels) - 1) of the image per axis (4x for three levels);
    ``latent_channels``: channels of the latent. Every width must be divisible by ``norm_groups``.
    ``mask_channels``: 0, or K: the decoder also reads the one-hot mask (K labels, background
    dropped) on the image grid, added at every decoder level (``synthkit autoencoder train
    --mask-decoder``; training sets K from the cohort's labels).
    """

    image_channels: int = 1
    latent_channels: int = 4
    channels: tuple[int, ...] = (16, 32, 64)
    num_res_blocks: int = 1
    norm_groups: int = 8
    mask_channels: int = 0

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channels) - 1)


@dataclass(frozen=True)
class AutoencoderRunConfig:
    """An autoencoder run folder's ``config.json``. ``crop``: edge of the random training crops;
    ``kl_weight``: weight of the KL term next to the L1 reconstruction loss; ``scale_factor``:
    1 / std of the posterior means of training volumes (None until measured; it brings latents to
    unit variance for diffusion; kept from the init weights when ``freeze_encoder``). ``train`` reuses :class:`TrainConfig` (Adam, lr schedule, EMA,
    checkpoints); its ``grad_accum``/``num_workers`` are not used."""

    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    preprocess: PreprocessConfig = field(default_factory=lambda: PreprocessConfig(target_shape=(128, 128, 128)))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=2000, batch_size=2, lr=1e-3, lr_final=2e-4, lr_drop_fraction=0.75, checkpoint_every=100,
        preview_every=200))
    data: DataConfig = field(default_factory=DataConfig)
    crop: int = 64
    kl_weight: float = 1e-6
    scale_factor: float | None = None
    freeze_encoder: bool = False  # train the decoder only (latents stay those of the init weights)
    decoder_noise: float = 0.0  # std of Gaussian noise on the decoder's input, in scaled-latent units
    init_sha256: str | None = None  # SHA-256 of the weights the run started from (--init), if any
    preset: str = "custom"
    synthkit_version: str = "0.1.0"
    kind: Literal["autoencoder"] = "autoencoder"
    recipe: str | None = None  # the synthkit.recipes name the run started from (`--recipe`), if any

    def save(self, path: str | Path) -> Path:
        return _save_json(self, path)

    @classmethod
    def load(cls, path: str | Path) -> AutoencoderRunConfig:
        data = _read_json(path)
        if not isinstance(data, dict) or data.get("kind") != "autoencoder":
            raise ConfigError("not an autoencoder run's config (no \"kind\": \"autoencoder\")", path)
        return from_dict(cls, data, where=str(path))


#: The subfolder of a latent run that holds its own copy of the autoencoder (config + weights).
LATENT_AE_FOLDER = "autoencoder"


AUTOENCODER_PRESETS: dict[str, dict[str, Any]] = {
    # For unit tests: 16^3 volumes.
    "tiny": {"channels": (8, 8, 16), "latent_channels": 4, "num_res_blocks": 1, "norm_groups": 4},
    # The throwaway model (0.73M parameters): cheap, ~22 dB after 250 steps.
    "small": {"channels": (16, 32, 64), "latent_channels": 4, "num_res_blocks": 1, "norm_groups": 8},
    # The demo-latent autoencoder.
    "demo": {"channels": (32, 64, 128), "latent_channels": 4, "num_res_blocks": 1, "norm_groups": 8},
}


def autoencoder_config(preset: str, image_channels: int = 1, **overrides: Any) -> AutoencoderConfig:
    """The named autoencoder preset (unknown preset -> ConfigError)."""
    if preset not in AUTOENCODER_PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(AUTOENCODER_PRESETS)}")
    kw = dict(AUTOENCODER_PRESETS[preset])
    kw.update(overrides)
    return AutoencoderConfig(image_channels=image_channels, **kw)
