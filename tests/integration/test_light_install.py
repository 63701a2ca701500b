"""The light install of `make serve`, built for real: `uv sync --frozen --no-default-groups` (the package's
own dependencies, no `train` or `dev` group) into a virtual environment of its own, from uv's cache (the full
environment of `make test` filled it, so it needs no network). In it `emotune serve` answers POST /analyze,
none of the full environment's packages can be imported, and the commands that need them say so in one line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from helpers.serving import GRACE_HOPPER, tiny_model_dir
from helpers.uv import UV

from benchmarks.served import bentoml_serve, serve_env
from emotune.config import REPO_ROOT
from emotune.environment import FULL_ENV_COMMAND, FULL_ONLY_MODULES
from emotune.labels import EMOTIONS

pytestmark = pytest.mark.slow

DEV_TOOLS = ("pytest", "playwright", "schemathesis", "ruff", "hypothesis")
READY_TIMEOUT_S = 300
SERVING = ("bentoml", "gradio", "onnxruntime", "cv2", "pandas", "scipy", "hydra", "mutagen", "cryptography")


@pytest.fixture(scope="module")
def light(tmp_path_factory) -> Path:
    """The light environment's bin/ folder."""
    venv = tmp_path_factory.mktemp("light") / "venv"
    env = {k: v for k, v in os.environ.items() if k != "VIRTUAL_ENV"} | {"UV_PROJECT_ENVIRONMENT": str(venv)}
    sync = [*UV, "sync", "--frozen", "--offline", "--no-default-groups", "--python", sys.executable]
    done = subprocess.run(sync, cwd=REPO_ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return venv / "bin"


def run(light: Path, *args: str, cwd: Path = REPO_ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOTUNE_", "VIRTUAL_ENV"))}
    return subprocess.run([str(light / "emotune"), *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_the_light_environment_has_serving_and_nothing_of_the_full_one(light):
    probe = (
        "import importlib.util, sys; "
        "print(' '.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None))"
    )
    wanted = sorted(FULL_ONLY_MODULES) + list(DEV_TOOLS) + list(SERVING)
    found = subprocess.run(
        [str(light / "python"), "-c", probe, *wanted], capture_output=True, text=True, check=True
    ).stdout.split()
    assert sorted(found) == sorted(SERVING)  # tensorflow, keras, dvc, mlflow, ..., pytest: none of them


@pytest.fixture(scope="module")
def served(light, tmp_path_factory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("light-serve")
    env = serve_env(tmp / "bentoml")
    # A new environment has no compiled bytecode yet: its first start compiles bentoml, gradio and the rest.
    command = [str(light / "emotune"), "serve"]
    with bentoml_serve("", env, tmp / "server.log", READY_TIMEOUT_S, command=command) as server:
        yield server.url


def test_emotune_serve_answers_analyze_and_the_page_in_the_light_environment(served):
    with GRACE_HOPPER.open("rb") as photo:
        answer = httpx.post(f"{served}/analyze", files={"image": photo}, data={"k": "3"}, timeout=60)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert len(body["faces"]) == 1 and body["faces"][0]["emotion"] in EMOTIONS
    assert len(body["recommendations"]) == 3
    health = httpx.get(f"{served}/health", timeout=10).json()
    assert health["model"].endswith("emotune.onnx (bundled)") and health["music"] == "ok"
    # and the page: its HTML and the configuration its script loads next
    page = httpx.get(f"{served}/ui/", timeout=60)
    assert page.status_code == 200 and "gradio" in page.text.lower()
    assert httpx.get(f"{served}/ui/config", timeout=60).status_code == 200


def test_light_commands_work_and_the_others_say_they_need_the_full_environment(
    light, tmp_path, tmp_path_factory
):
    recommend = run(light, "recommend", "--emotion", "sad", "-k", "3")
    assert recommend.returncode == 0, recommend.stderr
    analyze = run(light, "analyze", str(GRACE_HOPPER), "--compact")
    assert analyze.returncode == 0 and '"faces": [{' in analyze.stdout, analyze.stderr

    data = tmp_path / "fer2013_synthetic.csv"
    assert run(light, "data", "synthesize", "--out", str(data), "--rows", "70").returncode == 0
    evaluate = run(light, "evaluate", "--data", str(data), "--model", "models/emotune.onnx")
    keras_file = tiny_model_dir(tmp_path_factory) / "model.keras"  # models/ need not ship one
    keras_model = run(light, "analyze", str(GRACE_HOPPER), "--model", str(keras_file))
    for done, command in ((evaluate, "emotune evaluate"), (keras_model, "emotune analyze")):
        last = done.stderr.strip().splitlines()[-1]  # evaluate's progress bar may come first
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert last.startswith(f"{command}: ") and "needs the full environment" in last
        assert last.endswith(FULL_ENV_COMMAND) or f"({FULL_ENV_COMMAND})" in last
