"""A Python environment like a GPU machine's (PyTorch and Keras, no TensorFlow, OmegaConf or MLflow) for the
portable trainer's tests (emotune.portable). PyTorch comes from .bench-torch/ (make bench-torch)."""

from __future__ import annotations

import os
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

from emotune.config import REPO_ROOT
from helpers.uv import UV

TORCH_DIR = REPO_ROOT / ".bench-torch"
# What the bundle's trainer needs besides PyTorch, pinned to this environment's versions.
TRAINER_PACKAGES = ("keras", "numpy", "opencv-python-headless", "h5py")


def torch_dir() -> Path:
    """.bench-torch/, or a skip saying how to get it (CI installs it)."""
    if not (TORCH_DIR / "torch").is_dir():
        pytest.skip("PyTorch is not installed in .bench-torch/: `make bench-torch` installs it (CI does)")
    return TORCH_DIR


def import_torch():
    """torch in this process (after TensorFlow is fine), from .bench-torch/ appended to sys.path."""
    path = str(torch_dir())
    if path not in sys.path:
        sys.path.append(path)  # appended: its copies of common packages must not shadow the venv's
    import torch

    return torch


def trainer_python(dest: Path) -> Path:
    """A new virtual environment at `dest` holding only TRAINER_PACKAGES (and what they need)."""
    subprocess.run([*UV, "venv", "-q", str(dest), "--python", sys.executable], check=True, timeout=120)
    python = dest / "bin" / "python"
    pins = [f"{name}=={metadata.version(name)}" for name in TRAINER_PACKAGES]
    subprocess.run([*UV, "pip", "install", "-q", "--python", str(python), *pins], check=True, timeout=600)
    return python


def trainer_env() -> dict[str, str]:
    """PyTorch on the path, one thread (the test machine's cores are shared), no TensorFlow anywhere."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KERAS_BACKEND", "VIRTUAL_ENV")}
    return {**env, "PYTHONPATH": str(torch_dir()), "OMP_NUM_THREADS": "1"}
