"""Shared fixtures. Tests use tiny volumes (16^3) so the whole suite stays fast on 2 cores."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def cli():
    """Invoke the synthkit CLI in-process; returns a function (args) -> click Result."""
    from typer.testing import CliRunner

    from synthkit.cli.app import app

    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)

    return invoke


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Every cache synthkit writes (features, label segmenters, the privacy reference) goes to a
    folder of this test session, never the user's ~/.cache; a test that needs its own cache sets
    SYNTHKIT_CACHE_DIR itself."""
    old = os.environ.get("SYNTHKIT_CACHE_DIR")
    os.environ["SYNTHKIT_CACHE_DIR"] = str(tmp_path_factory.mktemp("synthkit-cache"))
    yield
    if old is None:
        os.environ.pop("SYNTHKIT_CACHE_DIR", None)
    else:
        os.environ["SYNTHKIT_CACHE_DIR"] = old


@pytest.fixture(scope="module")
def cohort(tmp_path_factory) -> Path:
    """Three phantom heads with head and tumour labels (a module may define its own ``cohort``)."""
    from test_training_helpers import write_phantom_cohort

    return write_phantom_cohort(tmp_path_factory.mktemp("cohort"), n=3)


@pytest.fixture(scope="module")
def ae(cohort, tmp_path_factory) -> Path:
    """A tiny autoencoder run (3 steps, 16^3 grid) on ``cohort``, for latent-run tests."""
    from synthkit.config import (
        AutoencoderRunConfig,
        PreprocessConfig,
        TrainConfig,
        autoencoder_config,
    )
    from synthkit.training.autoencoder import train_autoencoder

    cfg = AutoencoderRunConfig(autoencoder=autoencoder_config("tiny"), crop=8, preset="tiny",
                               preprocess=PreprocessConfig(target_shape=(16, 16, 16)),
                               train=TrainConfig(steps=3, checkpoint_every=3, batch_size=2, lr=1e-3, seed=1))
    return train_autoencoder(cohort, tmp_path_factory.mktemp("ae") / "ae", cfg)
