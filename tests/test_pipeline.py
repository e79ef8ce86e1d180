"""synthkit.pipeline: the model-kind registry, load() by kind, batched sampling of each kind,
and importing it without torch (the import direction itself: tests/test_layout.py)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from phantoms import phantom

from synthkit.errors import CheckpointError, UsageError

LABELS = {"background": 0, "head": 1, "tumour": 2}


def _untrained_run(root: Path, model_type: str = "ddpm") -> Path:
    """A run folder with fresh (untrained, seeded) weights of the kind: valid and fast."""
    from synthkit.config import (
        DataConfig,
        DiffusionConfig,
        PreprocessConfig,
        RunConfig,
        gan_config,
        model_config,
    )
    from synthkit.pipeline.registry import kind_class
    from synthkit.runtime.checkpoint import save_weights

    cfg = RunConfig(model=model_config("tiny", image_channels=1, mask_classes=2), model_type=model_type,
                    diffusion=DiffusionConfig(timesteps=10), gan=gan_config("tiny"),
                    preprocess=PreprocessConfig(target_shape=(16, 16, 16), mask_labels=(1, 2)),
                    data=DataConfig(channel_names=("T1",), labels=LABELS), preset="tiny")
    root.mkdir(parents=True)
    cfg.save(root / "config.json")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = kind_class(model_type).build_network(cfg)
    save_weights(root / "model.safetensors", {k: v.contiguous() for k, v in net.state_dict().items()})
    (root / "intensity.json").write_text(json.dumps({"lo": [0.0], "hi": [800.0]}))
    return root


# ---------------------------------------------------------------------- registry


def test_unknown_kind_is_refused_in_one_line(tmp_path, cli):
    from synthkit.pipeline.registry import kind_class, known_kinds

    assert known_kinds() == ["ddpm", "discogan", "latent", "pix2pix"]
    with pytest.raises(UsageError) as e:
        kind_class("vae")
    assert str(e.value) == "unknown model kind 'vae' (known: ddpm, discogan, latent, pix2pix)"
    run = _untrained_run(tmp_path / "run")
    cfg = json.loads((run / "config.json").read_text())
    cfg["model_type"] = "vae"
    (run / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="vae"):
        import synthkit

        synthkit.load(run)
    _, m = phantom(16, seed=0)
    from synthkit.io import write_nifti

    write_nifti(tmp_path / "masks" / "a.nii.gz", m.data, m.affine, is_label=True)
    r = cli("sample", tmp_path / "masks", "--model", run, "--out", tmp_path / "o", "--quiet")
    lines = r.output.strip().splitlines()
    assert r.exit_code == 1 and len(lines) == 1 and lines[0].startswith("synthkit: error:") and "vae" in lines[0]


def test_a_new_kind_registers_and_is_found(monkeypatch):
    from synthkit.pipeline import registry
    from synthkit.pipeline.pipeline import Pipeline

    monkeypatch.setattr(registry, "_KINDS", dict(registry._KINDS))

    @registry.register_kind("latent-test")
    class LatentPipeline(Pipeline):
        pass

    assert registry.kind_class("latent-test") is LatentPipeline and LatentPipeline.kinds == ("latent-test",)
    assert "latent-test" in registry.known_kinds()
    with pytest.raises(ValueError, match="already registered"):
        registry.register_kind("latent-test")(type("Other", (Pipeline,), {}))
    with pytest.raises(ValueError, match="already registered"):
        registry.register_kind("ddpm")(type("Other", (Pipeline,), {}))


@pytest.mark.parametrize("kind, cls_name", [("ddpm", "DiffusionPipeline"), ("pix2pix", "GanPipeline"),
                                            ("discogan", "GanPipeline")])
def test_load_dispatches_on_model_type(tmp_path, kind, cls_name):
    import synthkit
    from synthkit.pipeline import Pipeline

    pipe = synthkit.load(_untrained_run(tmp_path / "run", kind))
    assert type(pipe).__name__ == cls_name and isinstance(pipe, Pipeline) and pipe.kind == kind
    assert not any(p.requires_grad for p in pipe.model.parameters()) and not pipe.model.training
    if kind != "ddpm":
        assert pipe.diffusion.num_timesteps == 1 and pipe.check_sampling(None, None, 0.0) == (kind, 1)
        with pytest.raises(UsageError, match=f"{kind} GAN"):
            pipe.check_sampling("ddim", None, 0.0)
    else:
        assert pipe.check_sampling(None, None, 0.0) == ("ddpm", 10)
        assert pipe.check_sampling("ddim", 3, 0.0) == ("ddim", 3)
        with pytest.raises(UsageError, match="ddpm always runs all T steps"):
            pipe.check_sampling("ddpm", 3, 0.0)
        with pytest.raises(UsageError, match="--sampler must be one of"):
            pipe.check_sampling("euler", None, 0.0)


# ---------------------------------------------------------------------- batched sampling


@pytest.mark.parametrize("kind", ["ddpm", "pix2pix"])
def test_sample_batch_is_one_call_and_each_volume_its_own(tmp_path, kind):
    import synthkit

    pipe = synthkit.load(_untrained_run(tmp_path / "run", kind))
    sizes: list[int] = []
    pipe.model.register_forward_hook(lambda mod, args, out: sizes.append(int(args[0].shape[0])))
    masks = [phantom(16, seed=s)[1] for s in range(3)]
    cond = torch.stack([pipe.prepare(m).cond for m in masks])
    kw = {"sampler": "ddim", "steps": 3} if kind == "ddpm" else {}
    seeds, bg = [11, 12, 13], [True, False, True]
    batch = pipe.sample_batch(cond, seeds, background=bg, **kw)
    assert sizes == ([3] * 3 if kind == "ddpm" else [3])  # one network call per step for all three
    alone = torch.cat([pipe.sample_batch(cond[i : i + 1], [seeds[i]], background=[bg[i]], **kw) for i in range(3)])
    torch.testing.assert_close(batch, alone, rtol=0, atol=1e-5)
    # the batch order does not matter either: volume i depends on (cond[i], seeds[i]) only
    flipped = pipe.sample_batch(cond.flip(0), seeds[::-1], background=bg[::-1], **kw)
    torch.testing.assert_close(flipped.flip(0), batch, rtol=0, atol=1e-5)
    # the seed is the volume's noise (GANs: dropout, Isola et al.)
    assert not torch.equal(pipe.sample_batch(cond[:1], [99], **kw), batch[:1])
    # Pipeline.sample is the batch-1 call, on the mask's grid
    vol = pipe.sample(masks[0], seed=11, background=True, **kw)
    np.testing.assert_array_equal(vol.data, pipe.to_volume(alone[0], pipe.prepare(masks[0]).record).data)
    assert np.allclose(vol.data[0][masks[0].data[0] == 0], 0.0, atol=1e-3)  # held at background (lo = 0)


def test_sample_batch_checks_its_arguments(tmp_path):
    import synthkit

    pipe = synthkit.load(_untrained_run(tmp_path / "run"))
    cond = pipe.prepare(phantom(16, seed=0)[1]).cond[None]
    with pytest.raises(ValueError, match="N = len"):
        pipe.sample_batch(cond, [1, 2], sampler="ddim", steps=2)
    with pytest.raises(ValueError, match="one flag per volume"):
        pipe.sample_batch(cond, [1], background=[True, False], sampler="ddim", steps=2)


# ---------------------------------------------------------------------- the run's label rules

BRATS_NET = {"background": 0, "necrotic core": 1, "edema": 2, "enhancing": 3, "brain": 4}


def _brats_pipeline():
    """A Pipeline (config only, no network) of a run trained the paper's way on BraTS."""
    from synthkit.config import DataConfig, PreprocessConfig, RunConfig
    from synthkit.pipeline import Pipeline

    cfg = RunConfig(preprocess=PreprocessConfig(target_shape=(16, 16, 16), mask_labels=(1, 2, 3, 4),
                                                label_map={"4": 3}, brain_label=4),
                    data=DataConfig(channel_names=("T1", "T1ce", "T2", "FLAIR"), labels=BRATS_NET))
    return Pipeline(Path("run"), cfg, None, None, "cpu", {}, "")


def _brats_case():
    """(raw seg (1, 16, 16, 16) with 0/1/2/4, a 4-channel image whose brain is T1 > 0)."""
    from synthkit.io.volume import Volume

    img, m = phantom(16, seed=3, channels=4)
    brain = m.data[0] > 0
    seg = np.where(m.data[0] == 2, 2, 0).astype(np.int16)
    idx = np.argwhere(seg == 2)
    seg[tuple(idx[0])], seg[tuple(idx[1])] = 4, 1
    return Volume(seg[None], m.affine), Volume(np.where(brain, img.data * 100, 0).astype(np.float32), m.affine)


def test_network_labels_and_the_runs_label_rules_on_an_input_mask():
    from synthkit.errors import CohortError
    from synthkit.io.brats import LABELS
    from synthkit.io.volume import Volume

    pipe = _brats_pipeline()
    assert pipe.network_labels() == BRATS_NET
    seg, img = _brats_case()
    raw = seg.data[0]
    brain = (raw == 0) & (img.data[0] > 0)
    want = np.where(raw == 4, 3, raw) + 4 * brain
    # BraTS names (enhancing 4): translated by name; the brain label from the first channel, read lazily
    calls = []
    out = pipe.to_network_mask(seg, image=lambda: calls.append(1) or img, labels=LABELS)
    assert np.array_equal(out.data[0], want) and calls == [1] and np.array_equal(out.affine, seg.affine)
    # no names: the run's label_map by value, the same result
    assert np.array_equal(pipe.to_network_mask(seg, image=img).data[0], want)
    # a dataset synthkit wrote (network names and values, brain included): unchanged, no image read
    again = pipe.to_network_mask(out, image=lambda: calls.append(1), labels=BRATS_NET)
    assert np.array_equal(again.data[0], want) and calls == [1]
    # the same names renumbered (e.g. brain 4 written as 1): back to the run's values by name
    renamed = {"background": 0, "brain": 1, "necrotic core": 2, "edema": 3, "enhancing": 4}
    to_new = {0: 0, 4: 1, 1: 2, 2: 3, 3: 4}
    shuffled = Volume(np.vectorize(to_new.get)(want).astype(np.int16)[None], seg.affine)
    assert np.array_equal(pipe.to_network_mask(shuffled, labels=renamed).data[0], want)
    # 'network' leaves values alone; without an image there is no brain label to add
    assert np.array_equal(pipe.to_network_mask(seg, label_space="network").data[0], raw)
    assert np.array_equal(pipe.to_network_mask(seg).data[0], np.where(raw == 4, 3, raw))
    # an image on another grid is refused, not silently used
    shifted = Volume(img.data, img.affine + np.array([[0, 0, 0, 3.0]] * 3 + [[0, 0, 0, 0]]))
    with pytest.raises(CohortError, match="same grid"):
        pipe.to_network_mask(seg, image=shifted)
    with pytest.raises(UsageError, match="label_space"):
        pipe.to_network_mask(seg, label_space="other")
    # prepare on the result: the brain label is the head, so the background may be held
    prepared = pipe.prepare(out, "network")
    assert prepared.has_head and prepared.cond.shape == (4, 16, 16, 16)


# ---------------------------------------------------------------------- import cost
# (which package may import which: tests/test_layout.py)


def test_inference_packages_import_without_torch():
    code = ("import sys, synthkit.pipeline, synthkit.jobs, synthkit.runtime; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if m.startswith('synthkit'))")
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
