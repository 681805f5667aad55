"""Shared fixtures: one small synthetic dataset and feature cache per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import sevlm  # noqa: F401  (torchvision shim first)
from sevlm.config import ExperimentConfig, apply_overrides, tiny

# Ray and MLflow write under the home directory by default; keep test runs to themselves.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    """Synthetic data, feature cache and EA classifier shared by the session's runs."""
    return tmp_path_factory.mktemp("sevlm-data")


def small_config(data_root: Path, output_dir: Path, **overrides) -> ExperimentConfig:
    """The tiny preset on a small synthetic set: a full run in well under a minute."""
    base = {
        "data.synthetic_dir": str(data_root / "synthetic-small"),
        "data.feature_cache_dir": str(data_root / "cache" / "features"),
        "data.synthetic_paintings": 60,
        "train.epochs": 2,
        "train.log_every_steps": 2,
        "eval.use_meteor": False,
        "eval.max_new_tokens": 16,
        "output_dir": str(output_dir),
    }
    base.update(overrides)
    return apply_overrides(tiny(), base)


@pytest.fixture
def sweep_in_tmp(tmp_path, monkeypatch):
    """A sweep driven from the test process: its ./mlflow.db and ./ray_results in the test's
    folder, no tracking server from the environment, and the Ray it started shut down."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("RAY_DEDUP_LOGS", "0")
    yield tmp_path
    import ray

    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def tokenizer():
    """The offline GPT-2 BPE (the tiny preset's tokenizer, all merges)."""
    from sevlm.text import SEVLMTokenizer

    return SEVLMTokenizer.offline()


@pytest.fixture(scope="session")
def lexicon():
    """The Warriner VAD lexicon the data pipeline reads."""
    from sevlm.vad import load_lexicon

    return load_lexicon("warriner")


def pytest_collection_modifyitems(config, items):
    """The two-node cluster rehearsal (minutes) runs after everything else: a failure
    elsewhere shows first."""
    items.sort(key=lambda item: item.get_closest_marker("rehearsal") is not None)
