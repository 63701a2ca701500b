"""A shared tracking server, for real: the whole smoke pipeline (`dvc repro`: prepare -> train -> evaluate
-> promote) logs to an `mlflow server` on loopback that keeps and serves the artifacts, and promote reads
and writes the model registry through it. Nothing of MLflow's is written into the checkout."""

from __future__ import annotations

import json

import pytest
import yaml
from helpers.pipeline import smoke_copy, with_run_id
from helpers.tracking_server import mlflow_server

# A server and the whole pipeline: minutes on a busy 2-core machine, more than the suite's default 600 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.mktemp("tracking-server")
    with mlflow_server(base / "server") as server:
        # promote.force: replace the bundled model (trained on other data), so promote registers the run
        pipeline = smoke_copy(
            base / "repo",
            tracking_uri=server.url,
            overrides=["promote.force=true", "train.max_train_rows=256"],
        )
        pipeline.run("dvc", "repro", timeout=600)
        yield with_run_id(pipeline), server


def test_the_run_and_its_artifacts_are_on_the_server(tracked):
    from mlflow import MlflowClient

    pipeline, server = tracked
    client = MlflowClient(tracking_uri=server.url)
    run = client.get_run(pipeline.run_id)
    assert run.info.status == "FINISHED"
    assert "best_val_accuracy" in run.data.metrics and "test_accuracy" in run.data.metrics  # train, evaluate
    assert json.loads(pipeline.path("artifacts/train/run.json").read_text())["tracking_uri"] == server.url
    # Artifacts go through the server (proxied), which keeps them in its own folder.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_curves.png", "history.json", "config", "evaluation"} <= names
    kept = {p.name for p in server.artifacts.rglob("*") if p.is_file()}
    assert {"training_curves.png", "history.json", "params.yaml", "MLmodel"} <= kept


def test_promote_used_the_servers_registry(tracked):
    from mlflow import MlflowClient

    pipeline, server = tracked
    params = yaml.safe_load(pipeline.path("params.yaml").read_text())
    client = MlflowClient(tracking_uri=server.url)
    champion = client.get_model_version_by_alias(
        params["tracking"]["registered_model"], params["promote"]["alias"]
    )
    assert champion.run_id == pipeline.run_id
    card = json.loads(pipeline.path("models/model_card.json").read_text())
    assert card["mlflow"]["run_id"] == pipeline.run_id
    assert str(card["mlflow"]["version"]) == str(champion.version)


def test_nothing_of_mlflow_is_written_locally(tracked):
    pipeline, _ = tracked
    assert not pipeline.path("mlruns").exists()
    assert not pipeline.path("mlflow.db").exists()
    # no logged model, artifact folder or store anywhere in the checkout
    assert [str(p.relative_to(pipeline.root)) for p in pipeline.root.rglob("MLmodel")] == []
    assert [str(p.relative_to(pipeline.root)) for p in pipeline.root.rglob("mlruns")] == []
