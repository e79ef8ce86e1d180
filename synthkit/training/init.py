"""Start a denoiser from another run's weights (``synthkit train --init RUN``).

The run's own config decides the architecture; the init run's EMA weights (``model.safetensors``)
are copied tensor by tensor and must match it, with one exception that keeps the function the
same: a run whose mask reaches the latent grid at a finer ``cond_factor`` than the init run's
(e.g. the full-resolution mask, ``c = 4``, from a run that pooled it, ``c = 1``). Its first
convolution sees each label as ``c**3`` sub-block channels whose mean is the pooled fraction the
init run saw, so each sub-block channel starts with the init weight of its label divided by
``(c / c_init)**3``: the new network computes exactly what the init network computed, and
training then learns to use the detail.
"""

from __future__ import annotations

from pathlib import Path

import torch

from synthkit.config import RunConfig
from synthkit.errors import UsageError
from synthkit.runtime import checkpoint as ckpt

CONV_IN = "conv_in.weight"


def _expand_conv_in(w: torch.Tensor, image_channels: int, classes: int, ratio: int) -> torch.Tensor:
    """``(O, C + K, k, k, k)`` -> ``(O, C + K * ratio**3, ...)``: label ``k``'s weight spread evenly
    over its ``ratio**3`` sub-block channels (channel order of ``latent_cond``)."""
    img, cond = w[:, :image_channels], w[:, image_channels:]
    per = cond.shape[1] // classes  # the init run's sub-block channels per label
    cond = cond.reshape(w.shape[0], classes, per, *w.shape[2:])
    sub = round(per ** (1 / 3))
    new = sub * ratio
    # each old sub-block (i, j, l) becomes ratio^3 new ones (i*ratio + a, ...)
    cond = cond.reshape(w.shape[0], classes, sub, 1, sub, 1, sub, 1, *w.shape[2:])
    cond = cond.expand(-1, -1, -1, ratio, -1, ratio, -1, ratio, *w.shape[2:]) / ratio**3
    cond = cond.reshape(w.shape[0], classes * new**3, *w.shape[2:])
    return torch.cat([img, cond], dim=1)


def init_weights(model: torch.nn.Module, cfg: RunConfig, init_dir: Path) -> None:
    """Load ``init_dir``'s weights into ``model`` (built from ``cfg``), in place; UsageError when
    they do not fit (see the module docstring)."""
    init_cfg_path = init_dir / "config.json"
    if not (init_dir / "model.safetensors").is_file() or not init_cfg_path.is_file():
        raise UsageError("--init needs a run folder with config.json and model.safetensors", init_dir)
    old = RunConfig.load(init_cfg_path)
    state = ckpt.load_weights(init_dir / "model.safetensors")
    c_old, c_new = old.model.cond_factor, cfg.model.cond_factor
    if CONV_IN in state and c_new != c_old:
        if c_new % c_old or old.model.mask_classes != cfg.model.mask_classes:
            raise UsageError(f"--init: cannot start a run with --cond-factor {c_new} and {cfg.model.mask_classes} "
                             f"label(s) from one with {c_old} and {old.model.mask_classes}", init_dir)
        state[CONV_IN] = _expand_conv_in(state[CONV_IN], old.model.image_channels, old.model.mask_classes,
                                         c_new // c_old)
    own = model.state_dict()
    bad = sorted(k for k in own if k not in state or state[k].shape != own[k].shape)
    if bad or set(state) - set(own):
        raise UsageError(f"--init: that run's network differs from this run's ({(bad or sorted(set(state) - set(own)))[0]}); "
                         "use the same --preset and latent channels", init_dir)
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
