"""The two installs on paper: the package's own dependencies are the light serving set (`make serve`), the
`train` and `dev` groups make the full one, and the bento carries the light set at uv.lock's versions. (The
light environment built for real: tests/integration/test_light_install.py.)"""

from __future__ import annotations

import subprocess
import tomllib

import yaml
from helpers.uv import UV

from emotune.config import REPO_ROOT

PYPROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
REQUIREMENTS = REPO_ROOT / "requirements-serve.txt"
FULL_ONLY = ("tensorflow", "tensorflow-cpu", "keras", "dvc", "mlflow", "scikit-learn", "pytest", "playwright")


def name_of(requirement: str) -> str:
    for stop in "<>=!~;[ ":
        requirement = requirement.split(stop)[0]
    return requirement.strip().lower().replace("_", "-")


def requirement_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def test_serving_is_the_package_and_training_and_tests_are_groups():
    light = {name_of(r) for r in PYPROJECT["project"]["dependencies"]}
    groups = PYPROJECT["dependency-groups"]
    assert {"bentoml", "gradio", "onnxruntime", "opencv-python-headless", "hydra-core"} <= light
    assert not light & set(FULL_ONLY)
    assert {"tensorflow-cpu", "keras", "dvc", "mlflow"} <= {name_of(r) for r in groups["train"]}
    assert {"pytest", "playwright", "ruff"} <= {name_of(r) for r in groups["dev"]}
    assert PYPROJECT["tool"]["uv"]["default-groups"] == ["train", "dev"]  # plain `uv sync`: the full one


def test_the_bento_installs_the_light_set_at_the_locked_versions():
    python = yaml.safe_load((REPO_ROOT / "bentofile.yaml").read_text())["python"]
    assert python["requirements_txt"] == REQUIREMENTS.name and "packages" not in python
    pinned = {name_of(line): line for line in requirement_lines(REQUIREMENTS.read_text())}
    assert all("==" in line for line in pinned.values())
    assert {name_of(r) for r in PYPROJECT["project"]["dependencies"]} <= set(pinned)
    assert not set(pinned) & set(FULL_ONLY)


def test_requirements_serve_is_the_export_of_the_current_lock():
    # The command its header names, to stdout.
    command = REQUIREMENTS.read_text().splitlines()[1].lstrip("# ").split()
    assert command[:2] == ["uv", "export"] and command[-2:] == ["-o", REQUIREMENTS.name]
    exported = subprocess.run(
        [*UV, *command[1:-2]], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert requirement_lines(exported) == requirement_lines(REQUIREMENTS.read_text()), (
        f"uv.lock changed: regenerate {REQUIREMENTS.name} with the command in its header"
    )
