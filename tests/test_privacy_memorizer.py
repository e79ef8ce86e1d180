"""The gate against a model that really memorised, trained here with synthkit's own trainer.

Subjects each have their own texture (:func:`privacy_cohorts.individual`), which the mask does
not determine: a model reproduces it only by memorising the subject. A tiny model trained on 4
subjects for many passes reproduces them from their masks (checked by nearest neighbours in
voxel space before the gate is asked anything); `synthkit privacy` must flag at least 80% of its
samples and `anonymize` must regenerate or drop them. A model trained on many subjects for the
same small budget, given masks of people it never saw, must be flagged no more often than real
unseen subjects are. Nothing is cached between tests.
"""

from __future__ import annotations

import json

import numpy as np
import privacy_cohorts as pc
import pytest

from synthkit.config import DiffusionConfig, PreprocessConfig, RunConfig, TrainConfig, model_config

SIZE = 16
T = 20
MEMORIZE = 600  # steps of 2 volumes: 300 passes over each of 4 subjects
NORMAL = 200  # steps of 2 volumes: 25 passes over each of 16 subjects


def _train(cohort, out, steps: int, batch: int = 2, lr: float = 4e-3):
    from synthkit.training import train

    cfg = RunConfig(model=model_config("tiny"), diffusion=DiffusionConfig(timesteps=T),
                    preprocess=PreprocessConfig(target_shape=(SIZE,) * 3),
                    train=TrainConfig(steps=steps, batch_size=batch, lr=lr, lr_final=lr / 10, ema_decay=0.9,
                                      checkpoint_every=steps, seed=0), preset="tiny")
    return train(cohort, out, cfg, progress=False)


def _sample(run, masks, out, per_mask: int):
    from synthkit.jobs.sample import sample_masks
    from synthkit.pipeline import load

    return sample_masks(load(run, "cpu"), masks, out, per_mask=per_mask, sampler="ddim", steps=T, seed=1)


def _corr(a, b):
    return float(np.corrcoef(np.ravel(a), np.ravel(b))[0, 1])


@pytest.mark.slow
def test_gate_flags_a_real_memorizer_and_not_a_model_that_did_not_memorize(cli, tmp_path, monkeypatch):
    import nibabel as nib

    monkeypatch.setenv("SYNTHKIT_CACHE_DIR", str(tmp_path / "cache"))
    few = pc.individual(range(4), SIZE)
    many = pc.individual(range(100, 116), SIZE)
    holdout = pc.individual(range(200, 206), SIZE)
    fresh = pc.individual(range(300, 306), SIZE, prefix="fresh_")
    for name, items in (("few", few), ("many", many), ("holdout", holdout), ("fresh", fresh)):
        pc.write_cohort(tmp_path / name, items)

    # the memorizer: 4 subjects, 300 passes over each
    mem = _train(tmp_path / "few", tmp_path / "mem", MEMORIZE)
    man = _sample(mem, tmp_path / "few", tmp_path / "mem_out", per_mask=2)
    images = {cid: img[0] for cid, img, _, _ in few}
    for e in man["items"]:  # it really reproduces its subjects: nearest by far is the source
        x = np.asarray(nib.load(str(tmp_path / "mem_out" / e["images"][0])).dataobj, dtype=np.float32)
        corr = sorted(((_corr(x, v), cid) for cid, v in images.items()), reverse=True)
        assert corr[0][1] == e["case"] and corr[0][0] > 0.8 and corr[0][0] - corr[1][0] > 0.1, (e["case"], corr)

    res = cli("privacy", tmp_path / "few", tmp_path / "mem_out", "--holdout", tmp_path / "holdout", "--shape", SIZE,
              "--no-features", "--json", tmp_path / "mem.json", "--quiet")
    assert res.exit_code == 0, res.output
    vols = json.loads((tmp_path / "mem.json").read_text())["volumes"]
    # flagged, and the nearest training subject (by identity or by voxels) is the source
    caught = [v for v in vols if v["flagged"] and v["id"].rsplit("_s", 1)[0] in (v["nearest"], v["image_nearest"])]
    assert len(caught) >= 0.8 * len(vols), [(v["id"], v["nearest"], v["reason"]) for v in vols]

    # anonymize with the memorizer on its own subjects' masks: every volume regenerated or dropped
    res = cli("anonymize", tmp_path / "few", "--model", mem, "--out", tmp_path / "anon", "--train-cohort",
              tmp_path / "few", "--holdout", tmp_path / "holdout", "--perturb-masks", "none", "--no-features",
              "--sampler", "ddim", "--steps", T, "--shape", SIZE, "--max-retries", "1", "--quiet")
    assert res.exit_code == 0, res.output
    cases = json.loads((tmp_path / "anon" / "manifest.json").read_text())["cases"]
    assert all(c["attempts"][0]["flagged"] for c in cases)
    assert all(c["status"] == "dropped" or len(c["attempts"]) > 1 for c in cases)

    # a model that did not memorize: 16 subjects, a normal small budget, masks of people it never saw
    other = _train(tmp_path / "many", tmp_path / "other", NORMAL)
    _sample(other, tmp_path / "fresh", tmp_path / "other_out", per_mask=1)
    rates = {}
    for name, synth in (("model", tmp_path / "other_out"), ("real unseen", tmp_path / "fresh")):
        res = cli("privacy", tmp_path / "many", synth, "--holdout", tmp_path / "holdout", "--shape", SIZE,
                  "--no-features", "--json", tmp_path / "o.json", "--quiet")
        assert res.exit_code == 0, res.output
        vols = json.loads((tmp_path / "o.json").read_text())["volumes"]
        rates[name] = sum(v["flagged"] for v in vols) / len(vols)
    assert rates["model"] <= rates["real unseen"], rates
