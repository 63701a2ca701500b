"""The promote stage: best run -> MLflow Model Registry alias -> models/ (ONNX + card) -> BentoML store.

End to end on the shared smoke pipeline (real `dvc repro promote`, real MLflow sqlite store, a BentoML store
of the copy), plus the choice of the run, the export precisions and the all-or-nothing write of models/.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from emotune import export, promotion
from emotune.labels import EMOTIONS

pytestmark = pytest.mark.slow


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def promoted(smoke_pipeline):
    """`dvc repro promote` in the copy, as a fresh clone with synthetic data runs it (it keeps the bundled
    model), then again with promote.force=true (it ships the smoke model)."""
    from emotune.config import REPO_ROOT

    bundled = {p.name: p.read_bytes() for p in (REPO_ROOT / "models").iterdir()}
    # --force --single-item: run promote itself even when another test already brought it up to date
    kept = smoke_pipeline.run("dvc", "repro", "--force", "--single-item", "promote", timeout=400)
    assert {p.name: p.read_bytes() for p in smoke_pipeline.path("models").iterdir()} == bundled
    assert "promote: keeping the model in models: the candidate was trained on other data" in kept.stdout
    assert "promote.force=true replaces it" in kept.stdout
    smoke_pipeline.run(
        "emotune", "config", "compose", "experiment=smoke", "promote.force=true", "--out", "params.yaml"
    )
    forced = smoke_pipeline.run("dvc", "repro", "promote", timeout=400)
    assert "promote: replacing the model in models: promote.force=true" in forced.stdout
    return smoke_pipeline


def test_promote_stage_end_to_end(promoted):
    from mlflow import MlflowClient

    models = promoted.path("models")
    card = json.loads((models / "model_card.json").read_text())

    # models/: the float16 ONNX, the small Keras model, the card in JSON and Markdown, hashes that match
    assert sorted(p.name for p in models.iterdir()) == [
        "MODEL_CARD.md",
        "emotune.onnx",
        "model.keras",
        "model_card.json",
    ]
    assert set(card["files"]) == {"emotune.onnx", "model.keras"}
    for name, entry in card["files"].items():
        assert entry["sha256"] == sha256(models / name) and entry["bytes"] == (models / name).stat().st_size
    assert card["labels"] == list(EMOTIONS)
    assert card["input"]["shape"] == [None, 48, 48, 1] and card["input"]["dtype"] == "float32"
    assert "grayscale" in card["preprocessing"] and "48x48" in card["preprocessing"]
    assert card["model"]["onnx_precision"] == "float16"
    assert card["data"]["synthetic"] == "true" and card["data"]["version"]
    assert card["mlflow"]["run_id"] == promoted.run_id
    logged = MlflowClient(tracking_uri=promoted.tracking_uri).get_run(promoted.run_id).data
    assert card["metrics"]["validation"]["best_val_accuracy"] == pytest.approx(
        logged.metrics["best_val_accuracy"]
    )
    # the resting-face calibration's reference: the shipped file's mean reading of neutral validation faces
    calibration = card["calibration"]
    assert calibration["split"] == card["export_check"]["split"] and calibration["faces"] > 0
    assert len(calibration["neutral_mean"]) == 7 and sum(calibration["neutral_mean"]) == pytest.approx(
        1, abs=1e-4
    )
    assert "test_accuracy" in card["metrics"]["test"]
    check = card["export_check"]
    assert check["split"] == "validation" and check["n"] > 0
    # the smoke data has a test split, which chose nothing: the shipped file's accuracy on it is on the card
    test = np.load(promoted.path("artifacts/prepared/test.npz"))
    assert check["held_out"]["split"] == "test" and check["held_out"]["n"] == len(test["y"])
    assert check["validation_set"] == logged.tags["validation_set"]
    drop = 100 * (check["accuracy_float32"] - check["accuracy_exported"])
    assert drop == pytest.approx(check["accuracy_drop_points"], abs=1e-3)
    assert drop <= max(0.5, 100 / check["n"])  # within 0.5 points, or one face of the tiny smoke split
    assert card["reproduce"].startswith("git checkout ") and "dvc exp run" in card["reproduce"]
    markdown = (models / "MODEL_CARD.md").read_text()
    assert (
        "SYNTHETIC" in markdown
        and promoted.run_id in markdown
        and card["files"]["emotune.onnx"]["sha256"] in markdown
    )

    # The ONNX file serves the trained model: same predictions as artifacts/train/model.keras
    from emotune.recognizer import EmotionRecognizer

    x = np.load(promoted.path("artifacts/prepared/validation.npz"))["x"][:16]
    onnx = EmotionRecognizer.load(models).classify(x)
    keras = EmotionRecognizer.load(promoted.path("artifacts/train/model.keras")).classify(x)
    np.testing.assert_allclose(onnx, keras, atol=5e-3)

    # MLflow Model Registry: the alias points at a version of the promoted run, tagged with the ONNX hash
    client = MlflowClient(tracking_uri=promoted.tracking_uri)
    version = client.get_model_version_by_alias("emotune-fer", "champion")
    assert version.run_id == promoted.run_id and int(version.version) == card["mlflow"]["version"]
    assert version.tags["onnx_sha256"] == card["files"]["emotune.onnx"]["sha256"]
    served = {a.path for a in client.list_artifacts(promoted.run_id, "serving")}
    assert "serving/emotune.onnx" in served and "serving/model_card.json" in served

    # BentoML model store of the copy: the same files, the card's facts in the metadata
    store = promoted.path(".bentoml/models/emotune-fer")
    (entry,) = [p for p in store.iterdir() if p.is_dir()]
    assert sha256(entry / "emotune.onnx") == card["files"]["emotune.onnx"]["sha256"]
    model_yaml = (entry / "model.yaml").read_text()
    assert promoted.run_id in model_yaml and "float16" in model_yaml

    # DVC recorded the stage; nothing half-written was left behind
    assert "up to date" in promoted.run("dvc", "status", "promote").stdout
    assert not list(promoted.root.glob(".promote-*"))


@pytest.fixture
def in_copy(promoted, tmp_path, monkeypatch):
    """Run the promote library in-process against a copy of the smoke run's MLflow store."""
    from emotune.config import load_params

    db = tmp_path / "mlflow.db"
    shutil.copy(promoted.path("mlflow.db"), db)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    monkeypatch.chdir(promoted.root)
    return load_params(promoted.path("params.yaml")), f"sqlite:///{db}"


def test_a_failure_half_way_leaves_models_untouched(promoted, in_copy, tmp_path):
    from mlflow.exceptions import MlflowException

    cfg, _ = in_copy
    models = tmp_path / "models"
    shutil.copytree(promoted.path("models"), models)
    before = {p.name: sha256(p) for p in models.iterdir()}
    cfg.tracking.registered_model = "not/valid"  # the registry refuses it after the export was staged
    with pytest.raises(MlflowException, match="not/valid"):
        promotion.promote_stage(cfg, models_dir=models, bentoml_store=False)
    assert {p.name: sha256(p) for p in models.iterdir()} == before
    assert not list(tmp_path.glob(".promote-*"))


def test_the_export_check_fails_a_lossy_export():
    check = {"n": 3589, "accuracy_drop_points": 0.6}
    with pytest.raises(RuntimeError, match=r"max_accuracy_drop=0\.5"):
        export.enforce_export_check(check, 0.5, "int8")
    export.enforce_export_check({**check, "accuracy_drop_points": 0.5}, 0.5, "int8")
    export.enforce_export_check({**check, "accuracy_drop_points": -2.0}, 0.5, "int8")  # a gain is fine
    # one face of a 100-row split is below what the check can resolve
    export.enforce_export_check({"n": 100, "accuracy_drop_points": 1.0}, 0.5, "float16")
    with pytest.raises(RuntimeError):
        export.enforce_export_check({"n": 100, "accuracy_drop_points": 2.0}, 0.5, "float16")


def test_promote_picks_a_better_run_and_loads_its_model_from_mlflow(promoted, in_copy, tmp_path):
    import keras
    import mlflow
    from mlflow import MlflowClient

    from emotune import tracking
    from emotune.model import build_model
    from emotune.recognizer import EmotionRecognizer

    cfg, uri = in_copy
    keras.utils.set_random_seed(7)
    other = build_model({"name": "small_cnn", "width": 0.25, "dense_units": 16}, 48)
    other(np.zeros((1, 48, 48, 1), np.float32))
    mlflow.set_tracking_uri(uri)
    experiment = mlflow.get_experiment_by_name(str(cfg.tracking.experiment))
    smoke_faces = MlflowClient(tracking_uri=uri).get_run(promoted.run_id).data.tags["validation_set"]
    with mlflow.start_run(experiment_id=experiment.experiment_id) as run:
        mlflow.log_metric("best_val_accuracy", 0.99)
        mlflow.log_metric("test_accuracy", 0.01)
        mlflow.set_tag("validation_set", smoke_faces)
        tracking.log_keras_model(other)
    # A run with a better *test* score but a worse validation score must not win ...
    with mlflow.start_run(experiment_id=experiment.experiment_id):
        mlflow.log_metric("best_val_accuracy", 0.0)
        mlflow.log_metric("test_accuracy", 1.0)
        mlflow.set_tag("validation_set", smoke_faces)
    # ... nor a better validation score on other faces (or on faces it did not record): not comparable.
    for tags in ({"validation_set": "0123456789abcdef"}, {}):
        with mlflow.start_run(experiment_id=experiment.experiment_id):
            mlflow.log_metric("best_val_accuracy", 1.0)
            mlflow.set_tags(tags)

    card = promotion.promote_stage(cfg, models_dir=tmp_path / "models", bentoml_store=False)
    assert card["mlflow"]["run_id"] == run.info.run_id
    client = MlflowClient(tracking_uri=uri)
    champion = client.get_model_version_by_alias("emotune-fer", "champion")
    assert champion.run_id == run.info.run_id and int(champion.version) == 2
    # models/ now holds the new run's network (fetched from MLflow), not artifacts/train/model.keras
    x = np.random.default_rng(0).integers(0, 256, (8, 48, 48), dtype=np.uint8)
    served = EmotionRecognizer.load(tmp_path / "models").classify(x)
    np.testing.assert_allclose(served, other.predict(x[..., None].astype(np.float32), verbose=0), atol=5e-3)

    # Promoting the same run again reuses its registry version.
    promotion.promote_stage(cfg, models_dir=tmp_path / "models", bentoml_store=False)
    assert len(client.search_model_versions("name = 'emotune-fer'")) == 2


def test_the_choice_is_never_made_on_a_test_metric():
    for metric in ("test_accuracy", "test_macro_f1", "TEST_acc"):
        with pytest.raises(ValueError, match="validation"):
            promotion.check_metric(metric)
    promotion.check_metric("best_val_accuracy")


def test_best_run_ignores_failed_runs_and_runs_without_the_metric(tmp_path):
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    exp = client.create_experiment("e", artifact_location=(tmp_path / "mlruns").as_uri())
    runs = {}
    for name, value, status in [
        ("a", 0.5, "FINISHED"),
        ("b", 0.9, "FAILED"),
        ("c", 0.7, "FINISHED"),
        ("d", None, "FINISHED"),
    ]:
        run = client.create_run(exp, run_name=name)
        if value is not None:
            client.log_metric(run.info.run_id, "best_val_accuracy", value)
        client.set_terminated(run.info.run_id, status)
        runs[name] = run.info.run_id
    assert promotion.best_run(client, "e", "best_val_accuracy", "max").info.run_id == runs["c"]
    assert promotion.best_run(client, "e", "best_val_accuracy", "min").info.run_id == runs["a"]
    with pytest.raises(LookupError, match="no finished run"):
        promotion.best_run(client, "e", "val_f1")
    with pytest.raises(LookupError, match="not found"):
        promotion.best_run(client, "nope", "best_val_accuracy")
    client.set_tag(runs["a"], "validation_set", "faces-a")
    assert (
        promotion.best_run(client, "e", "best_val_accuracy", validation_set="faces-a").info.run_id
        == runs["a"]
    )
    with pytest.raises(LookupError, match="validated on faces faces-x"):
        promotion.best_run(client, "e", "best_val_accuracy", validation_set="faces-x")


def test_export_precisions_sizes_and_agreement(tmp_path):
    import keras

    from emotune.model import build_model

    keras.utils.set_random_seed(1)
    model = build_model({"name": "small_cnn", "width": 0.5, "dense_units": 64}, 48)
    x = np.random.default_rng(3).integers(0, 256, (32, 48, 48), dtype=np.uint8)
    y = np.random.default_rng(4).integers(0, 7, 32)
    sizes = {}
    for precision in ("float32", "float16", "int8"):
        files = export.export_serving_files(
            model, tmp_path / precision, precision, keep_keras_max_mb=0, calibration_faces=x
        )
        assert "model.keras" not in files and not (tmp_path / precision / "model.keras").exists()
        sizes[precision] = files["emotune.onnx"].stat().st_size
        check = export.export_accuracy(files["reference"], files["emotune.onnx"], x, y)
        assert check["n"] == 32 and check["prediction_agreement"] >= 0.9
        if precision != "int8":
            assert check["max_abs_probability_difference"] < 1e-2
    assert 0.45 < sizes["float16"] / sizes["float32"] < 0.6
    assert sizes["int8"] < sizes["float16"]
    with pytest.raises(ValueError, match="onnx_precision"):
        export.export_serving_files(model, tmp_path / "bad", "bfloat8")
    with pytest.raises(ValueError, match="calibration"):
        export.export_serving_files(model, tmp_path / "uncalibrated", "int8")


def test_flip_tta_is_averaged_inside_the_exported_model(tmp_path):
    import keras

    from emotune.model import build_model
    from emotune.recognizer import EmotionRecognizer
    from emotune.tta import with_flip_average

    keras.utils.set_random_seed(2)
    model = build_model({"name": "small_cnn", "width": 0.25, "dense_units": 16}, 48)
    faces = np.random.default_rng(5).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    mirrored = np.ascontiguousarray(faces[:, :, ::-1])
    x, xm = (f[..., None].astype(np.float32) for f in (faces, mirrored))
    expected = (model.predict(x, verbose=0) + model.predict(xm, verbose=0)) / 2
    assert not np.allclose(model.predict(x, verbose=0), model.predict(xm, verbose=0), atol=1e-4)

    files = export.export_serving_files(with_flip_average(model), tmp_path, "float32")
    for name in ("emotune.onnx", "model.keras"):  # the ONNX graph and the saved Keras model, reloaded
        recognizer = EmotionRecognizer.load(files[name])
        np.testing.assert_allclose(recognizer.classify(faces), expected, atol=1e-5)
        # a face and its mirror image are now the same question, with one answer
        np.testing.assert_allclose(recognizer.classify(mirrored), recognizer.classify(faces), atol=1e-5)
        np.testing.assert_allclose(recognizer.classify(faces[:1]), expected[:1], atol=1e-5)  # batch 1


def test_promote_with_flip_tta_says_so_in_the_card(promoted, in_copy, tmp_path):
    from emotune.recognizer import EmotionRecognizer

    cfg, _ = in_copy
    cfg.promote.flip_tta = True
    card = promotion.promote_stage(cfg, models_dir=tmp_path / "models", bentoml_store=False)
    assert card["model"]["flip_tta"] is True
    assert "horizontal flip, averaged inside the model" in (tmp_path / "models" / "MODEL_CARD.md").read_text()
    faces = np.load(promoted.path("artifacts/prepared/validation.npz"))["x"][:8]
    served = EmotionRecognizer.load(tmp_path / "models")
    mirrored = np.ascontiguousarray(faces[:, :, ::-1])
    np.testing.assert_allclose(served.classify(mirrored), served.classify(faces), atol=2e-2)  # float16 file


def test_publish_moves_files_in_and_drops_stale_ones(tmp_path):
    models, staging = tmp_path / "models", tmp_path / "staging"
    models.mkdir()
    staging.mkdir()
    (models / "model.keras").write_text("old keras")
    (models / "emotune.onnx").write_text("old onnx")
    (models / "README.txt").write_text("not ours: kept")
    (staging / "emotune.onnx").write_text("new onnx")
    (staging / "model_card.json").write_text("{}")
    promotion.publish(staging, models)
    assert sorted(p.name for p in models.iterdir()) == ["README.txt", "emotune.onnx", "model_card.json"]
    assert (models / "emotune.onnx").read_text() == "new onnx"
    assert not list(staging.iterdir())


def test_a_candidate_replaces_the_shipped_model_only_when_it_scores_better(tmp_path):
    """Same data, same validation faces: the shipped file is scored again and must be beaten; other data,
    other faces or an unreadable card keep it; force and an empty folder always take the candidate."""
    from types import SimpleNamespace

    from helpers.serving import export_tiny_model

    from emotune.data.splits import Validation
    from emotune.evaluation import load_predictor

    models = export_tiny_model(tmp_path / "models")
    card = json.loads((models / "model_card.json").read_text())
    card["data"].update(source_sha256="abc", synthetic="false")
    card["export_check"]["validation_set"] = "faces-1"
    card["mlflow"]["run_id"] = "shipped-run"
    (models / "model_card.json").write_text(json.dumps(card))
    faces = np.random.default_rng(0).integers(0, 256, (40, 48, 48), dtype=np.uint8)
    predicted = load_predictor(models / "emotune.onnx")(faces).argmax(1)
    labels = predicted.copy()
    labels[:10] = (labels[:10] + 1) % 7  # the shipped model gets 30 of 40 right
    validation = Validation(faces, labels, np.arange(0), "holdout", 0.1)

    def verdict(accuracy: float, force: bool = False, folder: Path = models, **tags: str):
        faces_set = tags.pop("faces", "faces-1")
        run = SimpleNamespace(
            info=SimpleNamespace(run_id=tags.pop("run_id", "candidate")),
            data=SimpleNamespace(tags={"data_source_sha256": "abc", "data_synthetic": "false", **tags}),
        )
        return promotion.replaces_shipped(
            folder, run, faces_set, validation, {"accuracy_exported": accuracy}, force
        )

    replace, why = verdict(0.80)
    assert replace and "candidate 0.8000, of the shipped model 0.7500 (the same 40 faces)" in why
    replace, why = verdict(0.75)  # a tie keeps what is there
    assert not replace and "promote.force=true replaces it anyway" in why
    assert verdict(0.10, force=True) == (True, "promote.force=true")
    assert verdict(0.10, run_id="shipped-run")[0]  # the same run again: refreshed
    replace, why = verdict(0.99, data_source_sha256="other")
    assert not replace and "trained on other data" in why
    replace, why = verdict(0.99, data_synthetic="true")
    assert not replace and "synthetic true" in why
    replace, why = verdict(0.99, faces="faces-2")
    assert not replace and "validated on other faces" in why
    (models / "model_card.json").write_text("{")
    replace, why = verdict(0.99)
    assert not replace and "model card cannot be read" in why
    assert verdict(0.0, folder=tmp_path / "empty") == (True, "it holds no model")


def test_promote_averages_with_the_shipped_model_when_that_scores_better(promoted, in_copy, tmp_path, capsys):
    """The smoke run's model is shipped. A new run on the same data and validation faces whose network
    answers at random scores less alone than averaged with the shipped one: the average ships in one ONNX
    graph, named on the card. Promoting that run again keeps it: alone it cannot beat the average."""
    import keras
    import mlflow
    from mlflow import MlflowClient

    from emotune import tracking
    from emotune.ensemble import networks
    from emotune.recognizer import EmotionRecognizer

    cfg, uri = in_copy
    assert cfg.promote.ensemble_with_shipped and not cfg.promote.flip_tta
    models = tmp_path / "models"
    shutil.copytree(promoted.path("models"), models)
    (shipped,) = networks(keras.models.load_model(models / "model.keras", compile=False))
    keras.utils.set_random_seed(3)
    face = keras.Input(shape=(48, 48, 1), name="face")
    pixels = keras.layers.Flatten()(keras.layers.Rescaling(1 / 255)(face))
    weak = keras.Model(face, keras.layers.Dense(7, "softmax")(pixels), name="weak")
    smoke = MlflowClient(tracking_uri=uri).get_run(promoted.run_id)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(experiment_id=smoke.info.experiment_id) as run:
        mlflow.log_metric("best_val_accuracy", 0.999)
        mlflow.set_tags(
            {k: smoke.data.tags[k] for k in ("validation_set", "data_source_sha256", "data_synthetic")}
        )
        tracking.log_keras_model(weak)

    cfg.promote.force = (
        True  # the average need not beat the shipped network alone; this test is about the average
    )
    card = promotion.promote_stage(cfg, models_dir=models, bentoml_store=False)
    out = capsys.readouterr().out
    assert "promote: averaging with the shipped model (promote.ensemble_with_shipped)" in out
    assert card["mlflow"]["run_id"] == run.info.run_id and card["model"]["flip_tta"] is False
    assert [m["run_id"] for m in card["model"]["ensemble"]] == [run.info.run_id, promoted.run_id]
    assert "networks averaged inside the model | 2" in (models / "MODEL_CARD.md").read_text()
    x = np.load(promoted.path("artifacts/prepared/validation.npz"))["x"][:16]
    inputs = x[..., None].astype(np.float32)
    expected = (weak.predict(inputs, verbose=0) + shipped.predict(inputs, verbose=0)) / 2
    np.testing.assert_allclose(EmotionRecognizer.load(models).classify(x), expected, atol=5e-3)  # float16
    assert len(networks(keras.models.load_model(models / "model.keras", compile=False))) == 2

    before = {p.name: sha256(p) for p in models.iterdir()}
    cfg.promote.force = False
    promotion.promote_stage(cfg, models_dir=models, bentoml_store=False)
    out = capsys.readouterr().out
    assert (
        f"not averaging with the shipped model: it holds this run's network already ({run.info.run_id})"
        in out
    )
    assert "promote: keeping the model in" in out and "validation accuracy of the candidate" in out
    assert {p.name: sha256(p) for p in models.iterdir()} == before
