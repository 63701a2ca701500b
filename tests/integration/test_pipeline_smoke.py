"""End to end: a real `dvc repro` of prepare -> train -> evaluate on the smoke configuration, and what it left
in a real MLflow store (see helpers/pipeline.py for the shared run)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from emotune.config import flatten
from emotune.labels import NUM_CLASSES

pytestmark = pytest.mark.slow

EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "learning_rate")


@pytest.fixture(scope="module")
def params(smoke_pipeline) -> dict:
    return yaml.safe_load(smoke_pipeline.path("params.yaml").read_text())


@pytest.fixture(scope="module")
def client(smoke_pipeline):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=smoke_pipeline.tracking_uri)


def test_stage_outputs(smoke_pipeline, params):
    train = smoke_pipeline.path("artifacts/train")
    history = json.loads((train / "history.json").read_text())
    metrics = json.loads((train / "metrics.json").read_text())
    assert params["data"]["synthetic"] is True
    assert [r["epoch"] for r in history] == list(range(1, params["train"]["epochs"] + 1))
    assert metrics["epochs_run"] == len(history)
    assert metrics["best_val_accuracy"] == pytest.approx(max(r["val_accuracy"] for r in history))
    assert metrics["synthetic"] is True
    assert (train / "training_curves.png").read_bytes()[:4] == b"\x89PNG"
    # No half-written leftovers from the atomic writes.
    assert not [p.name for p in train.iterdir() if p.name.startswith(".")]

    evaluation = json.loads(smoke_pipeline.path("artifacts/evaluate/metrics.json").read_text())
    assert evaluation["split"] == "test"  # the synthetic CSV has PrivateTest rows
    assert "PrivateTest" in evaluation["split_note"]
    test_rows = np.load(smoke_pipeline.path(f"{params['paths']['prepared']}/test.npz"))["y"]
    assert evaluation["n"] == len(test_rows)
    assert 0.0 <= evaluation["accuracy"] <= 1.0 and 0.0 <= evaluation["tta_accuracy"] <= 1.0
    report = json.loads(smoke_pipeline.path("artifacts/evaluate/classification_report.json").read_text())
    assert report["macro avg"]["f1-score"] == pytest.approx(evaluation["macro_f1"])
    assert smoke_pipeline.path("artifacts/evaluate/confusion_matrix.png").read_bytes()[:4] == b"\x89PNG"

    # DVC recorded every output: nothing left to reproduce.
    status = smoke_pipeline.run("dvc", "status", "evaluate").stdout
    assert "up to date" in status, status


def test_saved_model_is_the_float32_inference_model(smoke_pipeline):
    import keras

    model = keras.saving.load_model(smoke_pipeline.path("artifacts/train/model.keras"), compile=False)
    assert model.input_shape == (None, 48, 48, 1)
    assert not any(layer.name == "augment" for layer in model.layers)  # the trainer's augmenter stays out
    assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}
    probs = model.predict(np.zeros((2, 48, 48, 1), np.float32), verbose=0)
    assert probs.shape == (2, NUM_CLASSES)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_mlflow_run_holds_params_metrics_tags_and_artifacts(smoke_pipeline, params, client):
    run = client.get_run(smoke_pipeline.run_id)
    assert run.info.status == "FINISHED"

    # params: the whole flattened configuration
    expected = {k: ("null" if v is None else str(v)) for k, v in flatten(params).items()}
    assert run.data.params == expected

    # per-epoch metrics, one value per epoch, steps counting epochs from 1
    epochs = params["train"]["epochs"]
    history = json.loads(smoke_pipeline.path("artifacts/train/history.json").read_text())
    for name in EPOCH_METRICS:
        values = client.get_metric_history(run.info.run_id, name)
        assert sorted(m.step for m in values) == list(range(1, epochs + 1)), name
        by_step = {m.step: m.value for m in values}
        assert [by_step[r["epoch"]] for r in history] == pytest.approx([r[name] for r in history]), name
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(max(r["val_accuracy"] for r in history))

    # tags: the code and data versions
    head = smoke_pipeline.run("git", "rev-parse", "HEAD").stdout.strip()
    data_md5 = yaml.safe_load(smoke_pipeline.path("data.dvc").read_text())["outs"][0]["md5"]
    assert run.data.tags["git_commit"] == head
    assert run.data.tags["data_version"] == data_md5
    assert run.data.tags["data_synthetic"] == "true"

    # artifacts: curves, history, config; evaluation files
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"training_curves.png", "history.json", "config", "evaluation"} <= names
    config_file = client.download_artifacts(run.info.run_id, "config/params.yaml", str(smoke_pipeline.root))
    assert yaml.safe_load(Path(config_file).read_text()) == params
    evaluation_files = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    for name in ("metrics.json", "classification_report.json", "confusion_matrix.png"):
        assert f"evaluation/{name}" in evaluation_files

    # the model, logged with MLflow's Keras flavour and linked to this run
    import mlflow

    mlflow.set_tracking_uri(smoke_pipeline.tracking_uri)
    models = mlflow.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run.info.run_id}'",
        output_format="list",
    )
    assert [m.name for m in models] == ["model"]
    run_json = json.loads(smoke_pipeline.path("artifacts/train/run.json").read_text())
    assert run_json["model_uri"] == f"models:/{models[0].model_id}"
    assert run_json["experiment_id"] == run.info.experiment_id
    model_files = {a.path for a in client.list_logged_model_artifacts(models[0].model_id)}
    assert "MLmodel" in model_files
    # ... in the artifact location of the configuration, inside the repository
    assert models[0].artifact_location.startswith((smoke_pipeline.root / "mlruns").as_uri())

    # evaluation metrics, in the same run
    evaluation = json.loads(smoke_pipeline.path("artifacts/evaluate/metrics.json").read_text())
    assert run.data.metrics["test_accuracy"] == pytest.approx(evaluation["accuracy"])
    assert run.data.metrics["test_macro_f1"] == pytest.approx(evaluation["macro_f1"])
    assert run.data.metrics["test_tta_accuracy"] == pytest.approx(evaluation["tta_accuracy"])
    assert run.data.metrics["test_n"] == evaluation["n"]
    assert run.data.tags["eval_split"] == "test"


def test_evaluate_command_agrees_with_the_stage(smoke_pipeline, params, capsys):
    """`emotune evaluate` on the raw CSV (its PrivateTest rows) = the stage on the prepared test split."""
    from emotune.cli import main

    raw_csv = smoke_pipeline.path(params["data"]["raw_path"])
    model = smoke_pipeline.path("artifacts/train/model.keras")
    assert main(["evaluate", "--data", str(raw_csv), "--model", str(model), "--json"]) == 0
    cli = json.loads(capsys.readouterr().out)
    stage = json.loads(smoke_pipeline.path("artifacts/evaluate/metrics.json").read_text())
    assert cli["split"] == "test"
    assert cli["n"] == stage["n"]
    assert cli["accuracy"] == pytest.approx(stage["accuracy"])
    assert cli["macro_f1"] == pytest.approx(stage["macro_f1"])
