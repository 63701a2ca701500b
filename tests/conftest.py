"""Shared fixtures. Tests that need ../shared (the development data) skip cleanly when it is absent."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

from emotune.config import REPO_ROOT

SHARED_DIR = Path(os.environ.get("EMOTUNE_SHARED_DIR", REPO_ROOT.parent / "shared"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data, or skip: a user's fresh clone has no development data."""
    path = SHARED_DIR / "data"
    if not path.is_dir():
        pytest.skip(f"development data not found at {path} (set EMOTUNE_SHARED_DIR)")
    return path


from helpers.pipeline import smoke_pipeline  # noqa: E402, F401  (one shared real dvc repro smoke run)
