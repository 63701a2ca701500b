"""The real `dvc repro prepare` in a throw-away copy of this repository, on synthetic data."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from helpers.pipeline import copy_working_tree

pytestmark = pytest.mark.slow


def run(cwd: Path, *args: str, stdout_only: bool = False) -> str:
    # The venv's bin first: DVC runs the stage's `python` from PATH (as `uv run dvc repro` does).
    env = os.environ | {
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "DVC_NO_ANALYTICS": "1",
    }
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout if stdout_only else done.stdout + done.stderr


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def repo(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The working tree as git sees it (tracked + new, not ignored files), as a fresh git repository."""
    dest = tmp_path_factory.mktemp("repo")
    copy_working_tree(repo_root, dest)
    run(dest, "git", "init", "-q")
    run(dest, "emotune", "config", "compose", "experiment=smoke", "--out", "params.yaml")
    run(dest, "emotune", "data", "synthesize", "--rows", "140", "--seed", "0")
    run(dest, "git", "add", "-A")
    run(dest, "git", "-c", "user.name=test", "-c", "user.email=test@example.com", "commit", "-qm", "copy")
    return dest


def test_dvc_repro_prepare_runs_and_reruns_as_no_op(repo: Path) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    out = repo / params["paths"]["prepared"]
    log = run(repo, "dvc", "repro", "prepare")
    assert "Running stage 'prepare'" in log and "SYNTHETIC" in log
    assert sorted(p.name for p in out.iterdir()) == [
        "class_distribution.png", "report.json", "test.npz", "train.npz", "validation.npz"
    ]  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    assert report["synthetic"] is True and report["rows"] == 140
    assert report["source"] == params["data"]["raw_path"]
    lock = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["prepare"]
    assert lock["params"]["params.yaml"]["data"]["synthetic"] is True
    assert {d["path"] for d in lock["deps"]} >= {params["data"]["raw_path"], "pipelines/prepare.py"}
    first, out_hash = digests(out), lock["outs"][0]["md5"]

    assert "didn't change" in run(repo, "dvc", "repro", "prepare")
    # Forced real rerun (no run cache): the outputs come out byte-identical, so DVC records the same hash.
    assert "Running stage 'prepare'" in run(repo, "dvc", "repro", "--force", "--no-run-cache", "prepare")
    assert digests(out) == first
    assert yaml.safe_load((repo / "dvc.lock").read_text())["stages"]["prepare"]["outs"][0]["md5"] == out_hash

    # report.json is the DVC metric (dvc.yaml top-level `metrics`).
    (shown,) = json.loads(run(repo, "dvc", "metrics", "show", "--json", stdout_only=True)).values()
    assert (
        shown["data"][f"{params['paths']['prepared']}/report.json"]["data"]["counts"]["test"]["total"] == 14
    )
