"""DVC reruns a stage when its code changes: every `emotune` module a stage loads, as the real smoke pipeline
ran it (tests/helpers/module_audit records them), is among that stage's deps in dvc.yaml (the file or its
folder)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from emotune.config import REPO_ROOT

pytestmark = pytest.mark.slow


def stage_deps() -> dict[str, tuple[str, list[str]]]:
    """{stage: (its script, its deps without ${...} paths)} from dvc.yaml."""
    stages = yaml.safe_load((REPO_ROOT / "dvc.yaml").read_text())["stages"]
    return {
        name: (stage["cmd"].split()[-1], [d for d in stage["deps"] if "${" not in d])
        for name, stage in stages.items()
    }


def loaded_by_script(audit: Path) -> dict[str, set[str]]:
    """{script as DVC ran it (pipelines/train.py): the emotune files it loaded, relative to the checkout}."""
    loaded: dict[str, set[str]] = {}
    for record in audit.glob("*.json"):
        data = json.loads(record.read_text())
        script = data["argv"][0] if data["argv"] else ""
        if script.startswith("pipelines/"):
            files = {str(Path(f).resolve().relative_to(REPO_ROOT)) for f in data["files"]}
            loaded.setdefault(script, set()).update(files)
    return loaded


def covered(path: str, deps: list[str]) -> bool:
    return any(path == dep or path.startswith(dep.rstrip("/") + "/") for dep in deps)


def test_every_module_a_stage_loads_is_one_of_its_deps(smoke_pipeline):
    smoke_pipeline.run("dvc", "repro", "promote")  # prepare, train and evaluate ran in the fixture
    loaded = loaded_by_script(smoke_pipeline.root.parent / "module-audit")
    deps = stage_deps()
    assert set(deps) == {"prepare", "train", "evaluate", "promote"}
    missing = {}
    for stage, (script, stage_deps_) in deps.items():
        assert script in loaded, f"no record of {script}: did the smoke pipeline run stage {stage}?"
        assert script in stage_deps_, f"{stage} does not depend on its own script {script}"
        assert "src/emotune/__init__.py" in loaded[script]
        lacking = sorted(f for f in loaded[script] if not covered(f, stage_deps_))
        if lacking:
            missing[stage] = lacking
    assert not missing, f"dvc.yaml deps lack modules their stage loads: {missing}"


def test_the_check_sees_a_missing_dep():
    assert covered("src/emotune/data/fer2013.py", ["src/emotune/data"])
    assert covered("src/emotune/data/fer2013.py", ["src/emotune/data/"])
    assert not covered("src/emotune/data/fer2013.py", ["src/emotune/data/prepare.py"])
    assert not covered("src/emotune/database.py", ["src/emotune/data"])
