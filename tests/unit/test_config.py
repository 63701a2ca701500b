"""`dvc repro` and `dvc exp run -S ...` must run with the same configuration as conf/ says.

`dvc repro` reads the committed params.yaml as it is; `dvc exp run` (hydra.enabled) first composes conf/ with
DVC's own Hydra code into params.yaml. So: params.yaml must equal our composition of conf/, and DVC's
composition must equal ours, with and without overrides. If either drifts, these tests fail.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from emotune.config import compose, load_params, to_yaml


def test_committed_params_yaml_is_the_composed_conf(repo_root: Path) -> None:
    committed = (repo_root / "params.yaml").read_text()
    assert committed == to_yaml(compose()), "params.yaml is stale: run `make params` and commit it"


def dvc_compose(repo_root: Path, overrides: list[str], out: Path) -> str:
    """What `dvc exp run -S <overrides>` writes to params.yaml: DVC's own code and hydra settings."""
    from dvc.repo import Repo
    from dvc.utils.hydra import compose_and_dump

    with Repo(str(repo_root)) as repo:
        hydra = repo.config["hydra"]
    assert hydra.get("enabled") is True, "dvc config hydra.enabled must be true"
    assert hydra.get("config_module") is None
    config_dir = repo_root / hydra.get("config_dir", "conf")
    assert config_dir == repo_root / "conf"
    compose_and_dump(
        out, str(config_dir), None, hydra.get("config_name", "config"), str(repo_root), overrides
    )
    return out.read_text()


@pytest.mark.parametrize(
    "overrides", [[], ["experiment=smoke"], ["experiment=smoke", "train.epochs=3", "data.synthetic=true"]]
)
def test_dvc_exp_run_composes_exactly_what_we_compose(
    repo_root: Path, tmp_path: Path, overrides: list[str]
) -> None:
    ours = to_yaml(compose(overrides))
    theirs = dvc_compose(repo_root, overrides, tmp_path / "params.yaml")
    assert theirs == ours  # same text, so a `dvc exp run` leaves no formatting-only diff either
    cfg = load_params(tmp_path / "params.yaml")
    if "train.epochs=3" in overrides:
        assert cfg.train.epochs == 3
    if "experiment=smoke" in overrides:
        assert cfg.data.synthetic is True and "synthetic" in cfg.data.raw_path


def test_every_param_the_pipeline_uses_exists(repo_root: Path) -> None:
    """dvc.yaml's params and ${...} paths resolve against params.yaml (else DVC refuses the stage)."""
    from dvc.repo import Repo

    with Repo(str(repo_root)) as repo:
        stages = {stage.name: stage for stage in repo.index.stages if stage.cmd}
    assert "prepare" in stages
    params = yaml.safe_load((repo_root / "params.yaml").read_text())
    prepare = stages["prepare"]
    assert prepare.cmd == "python pipelines/prepare.py"
    assert {str(out) for out in prepare.outs} == {params["paths"]["prepared"]}
    assert params["data"]["raw_path"] in {str(dep) for dep in prepare.deps}


def test_version_flag_prints_the_installed_version(capsys, monkeypatch) -> None:
    from importlib import metadata

    from emotune import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out.strip() == f"emotune {metadata.version('emotune')}"

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(cli.metadata, "version", not_installed)  # a source tree that was never installed
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert capsys.readouterr().out.strip() == "emotune unknown"
