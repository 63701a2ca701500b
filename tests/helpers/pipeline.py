"""One real smoke run of the DVC pipeline, shared by every test that needs a trained model and its MLflow run.

`smoke_pipeline` (session scope, imported by conftest.py) copies the working tree (tracked and untracked,
not ignored files: no data/, no .venv) into a temporary git repository, composes params.yaml with
experiment=smoke, writes the synthetic FER2013 CSV and runs the real `dvc repro evaluate`
(prepare -> train -> evaluate) with a real MLflow sqlite store in that directory. Later stages (e.g. promote)
can run `smoke_pipeline.run("dvc", "repro", "promote")` on top of it instead of training again.
`smoke_copy` makes such a copy without running anything, for tests that need their own (another tracking
store, other settings, several training processes).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from emotune.config import REPO_ROOT

VENV_BIN = Path(sys.executable).parent
MODULE_AUDIT = Path(__file__).resolve().parent / "module_audit"  # its sitecustomize.py
SMOKE_ROWS = 1050  # 840 training faces: two smoke epochs take seconds, and every split has every class


@dataclass(frozen=True)
class SmokePipeline:
    root: Path  # the temporary repository copy, after `dvc repro evaluate`
    env: dict[str, str]  # PATH with the venv, MLFLOW_TRACKING_URI of the temp store, quiet TensorFlow
    tracking_uri: str
    run_id: str  # the MLflow run the train stage created (artifacts/train/run.json)

    def run(self, *cmd: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run a command in the copy with the pipeline's environment; a failure shows its output."""
        proc = subprocess.run(
            cmd, cwd=self.root, env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            output = f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            pytest.fail(f"{' '.join(cmd)} exited {proc.returncode}\n{output}")
        return proc

    def path(self, relative: str) -> Path:
        return self.root / relative


def repository_files(root: Path) -> list[str]:
    """What git tracks or would add (tracked + untracked, not ignored) and exists in the working tree."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [name for name in listed.split("\0") if name and (root / name).is_file()]


def copy_working_tree(src: Path, dest: Path) -> None:
    """Tracked and untracked-but-not-ignored files, as they are now (uncommitted edits included)."""
    for name in repository_files(src):
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / name, target)


def synthesize_command(root: Path) -> list[str]:
    """The command that writes the synthetic faces and FER+ votes where the copy's params.yaml reads them."""
    params = yaml.safe_load((root / "params.yaml").read_text())
    raw_path, votes = params["data"]["raw_path"], params["train"]["ferplus_path"]
    return ["emotune", "data", "synthesize", "--out", raw_path, "--votes", votes, "--rows", str(SMOKE_ROWS)]


def smoke_copy(root: Path, tracking_uri: str | None = None, overrides: Sequence[str] = ()) -> SmokePipeline:
    """A copy of the working tree at `root`, a git repository with params.yaml composed from experiment=smoke
    and `overrides`, and the synthetic faces written; nothing run yet (`run_id` is empty).

    MLflow logs to `tracking_uri` (default: an sqlite store in the copy).
    """
    copy_working_tree(REPO_ROOT, root)
    tracking_uri = tracking_uri or f"sqlite:///{root / 'mlflow.db'}"
    audit = root.parent / "module-audit"
    audit.mkdir(exist_ok=True)
    pipeline_env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "MLFLOW_TRACKING_URI": tracking_uri,
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "DVC_NO_ANALYTICS": "1",
        "BENTOML_DO_NOT_TRACK": "true",
        "BENTOML_HOME": str(root / ".bentoml"),
        # every stage writes the emotune modules it loaded here (tests/integration/test_dvc_deps.py)
        "EMOTUNE_MODULE_AUDIT": str(audit),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(MODULE_AUDIT), os.environ.get("PYTHONPATH")])),
        "GIT_AUTHOR_NAME": "test",
        "GIT_AUTHOR_EMAIL": "test@example.invalid",
        "GIT_COMMITTER_NAME": "test",
        "GIT_COMMITTER_EMAIL": "test@example.invalid",
    }
    pipeline = SmokePipeline(root=root, env=pipeline_env, tracking_uri=tracking_uri, run_id="")
    pipeline.run("emotune", "config", "compose", "experiment=smoke", *overrides, "--out", "params.yaml")
    # A commit, so the run's git_commit tag has something real to record.
    pipeline.run("git", "init", "-q")
    pipeline.run("git", "add", "-A")
    pipeline.run("git", "commit", "-q", "-m", "smoke pipeline copy")
    pipeline.run(*synthesize_command(root))
    return pipeline


def with_run_id(pipeline: SmokePipeline) -> SmokePipeline:
    """`pipeline` after its train stage ran: with the MLflow run id from artifacts/train/run.json."""
    run_id = json.loads(pipeline.path("artifacts/train/run.json").read_text())["run_id"]
    return SmokePipeline(
        root=pipeline.root, env=pipeline.env, tracking_uri=pipeline.tracking_uri, run_id=run_id
    )


@pytest.fixture(scope="session")
def smoke_pipeline(tmp_path_factory: pytest.TempPathFactory) -> SmokePipeline:
    pipeline = smoke_copy(tmp_path_factory.mktemp("smoke") / "repo")
    pipeline.run("dvc", "repro", "evaluate", timeout=400)
    return with_run_id(pipeline)
