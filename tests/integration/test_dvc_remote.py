"""A DVC remote, for real: the smoke pipeline's prepared data pushed to a remote (a local folder here; an S3
bucket or an SSH host is the same commands, docs/tracking.md), the cache and the outputs deleted, and
`dvc pull` bringing back the same bytes with nothing left to reproduce. The commands name the stage: the
copy's dvc.lock and data.dvc also name the bundled model's run and its real data, which this remote never
had."""

from __future__ import annotations

import hashlib
import shutil

import pytest
import yaml
from helpers.pipeline import smoke_copy

pytestmark = pytest.mark.slow


def digests(folder) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_push_then_pull_into_an_empty_cache(tmp_path):
    pipeline = smoke_copy(tmp_path / "repo")
    prepared = pipeline.path(yaml.safe_load(pipeline.path("params.yaml").read_text())["paths"]["prepared"])
    pipeline.run("dvc", "repro", "prepare")
    remote = tmp_path / "remote"
    pipeline.run("dvc", "remote", "add", "--default", "team", str(remote))
    pushed = pipeline.run("dvc", "push", "prepare")
    assert "pushed" in pushed.stdout, pushed.stdout
    assert any(p.is_file() for p in remote.rglob("*"))
    before = digests(prepared)
    assert {"train.npz", "validation.npz", "test.npz", "report.json"} <= set(before)

    # A fresh machine's view: no cache, no outputs. DVC sees them missing ...
    shutil.rmtree(pipeline.path(".dvc/cache"))
    shutil.rmtree(prepared)
    assert "up to date" not in pipeline.run("dvc", "status", "prepare").stdout

    # ... and the remote gives them back, byte for byte.
    pipeline.run("dvc", "pull", "prepare")
    assert digests(prepared) == before
    assert "Data and pipelines are up to date." in pipeline.run("dvc", "status", "prepare").stdout
    assert "in sync" in pipeline.run("dvc", "status", "--cloud", "prepare").stdout
