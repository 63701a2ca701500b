"""Evaluation: metrics on handmade cases with known answers, TTA, split choice and its note, the model
backends, the evaluate stage's fallback into a real MLflow run, and `emotune evaluate`."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from emotune import evaluation
from emotune.cli import main
from emotune.data import splits, synthesize
from emotune.data.fer2013 import load
from emotune.evaluate_commands import select_rows
from emotune.labels import EMOTIONS, NUM_CLASSES
from emotune.model import build_model
from emotune.preprocess import to_model_input


def one_hot_probs(predicted: list[int]) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[predicted]


def test_metrics_on_a_handmade_case():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = [0, 1, 1, 1, 2, 0]
    result = evaluation.classification_metrics(y_true, one_hot_probs(y_pred))
    assert result["n"] == 6
    assert result["accuracy"] == pytest.approx(4 / 6)
    # angry: P 1/2 R 1/2 F1 1/2; disgust: P 2/3 R 1 F1 0.8; fear: P 1 R 1/2 F1 2/3
    report = result["report"]
    assert report["angry"]["precision"] == pytest.approx(0.5)
    assert report["angry"]["f1-score"] == pytest.approx(0.5)
    assert report["disgust"]["precision"] == pytest.approx(2 / 3) and report["disgust"]["recall"] == 1.0
    assert report["disgust"]["f1-score"] == pytest.approx(0.8)
    assert report["fear"]["recall"] == pytest.approx(0.5)
    assert report["fear"]["f1-score"] == pytest.approx(2 / 3)
    assert result["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)  # over the classes that occur
    assert "happy" not in report
    matrix = np.array(result["confusion_matrix"])
    assert matrix.shape == (NUM_CLASSES, NUM_CLASSES) and matrix.sum() == 6
    assert matrix[0].tolist()[:3] == [1, 1, 0] and matrix[1].tolist()[:3] == [0, 2, 0]
    assert matrix[2].tolist()[:3] == [1, 0, 1]


def test_metrics_reject_bad_shapes():
    with pytest.raises(ValueError, match="shape"):
        evaluation.classification_metrics(np.array([0, 1]), np.zeros((2, 3)))
    with pytest.raises(ValueError, match="no rows"):
        evaluation.classification_metrics(np.array([], int), np.zeros((0, NUM_CLASSES)))


def test_tta_averages_with_the_mirrored_faces():
    """A predictor that looks only at the left edge: mirroring moves what it sees."""

    def left_edge(faces: np.ndarray) -> np.ndarray:
        probs = np.full((len(faces), NUM_CLASSES), 0.05, np.float32)
        bright = faces[:, :, 0].mean(axis=1) > 127
        probs[bright, 3] = 0.7  # happy
        probs[~bright, 4] = 0.4  # sad, less sure
        return probs

    x = np.zeros((4, 48, 48), np.uint8)
    x[0, :, 0] = 255  # bright left edge only: plain says happy, the mirror says sad; mean -> happy
    x[1, :, -1] = 255  # bright right edge only: plain says sad, the mirror says happy (0.7 > 0.4) -> happy
    x[2, :, 0] = x[2, :, -1] = 255  # both: happy either way
    y = np.array([3, 3, 4, 4])  # happy, happy, sad, sad
    result = evaluation.evaluate_faces(left_edge, x, y, tta=True)
    assert result["accuracy"] == pytest.approx(2 / 4)  # rows 0 and 3
    assert result["tta_accuracy"] == pytest.approx(3 / 4)  # rows 0, 1 and 3
    assert "tta_accuracy" not in evaluation.evaluate_faces(left_edge, x, y)


def test_split_choice_says_when_it_falls_back():
    everything = {"train", "validation", "test"}
    assert splits.choose_split(everything) == ("test", splits.SPLIT_NOTES["test"])
    split, note = splits.choose_split({"train", "validation"})
    assert split == "validation" and "PublicTest" in note and "optimistic" in note
    split, note = splits.choose_split({"train"})
    assert split == "train" and "TRAINING" in note
    assert splits.choose_split({"train", "validation", "test"}, "validation")[0] == "validation"
    with pytest.raises(ValueError, match="'test' not in the data"):
        splits.choose_split({"train", "validation"}, "test")


def test_outputs_are_written(tmp_path):
    result = evaluation.classification_metrics(np.array([0, 1, 2]), one_hot_probs([0, 1, 1]))
    result.update(split="test", split_note="test rows", tta_accuracy=1.0)
    paths = evaluation.write_outputs(result, tmp_path / "eval")
    metrics = json.loads(paths["metrics"].read_text())
    assert metrics == {
        "accuracy": pytest.approx(2 / 3),
        "macro_f1": pytest.approx(result["macro_f1"]),
        "n": 3,
        "split": "test",
        "split_note": "test rows",
        "tta_accuracy": 1.0,
    }
    assert json.loads(paths["report"].read_text())["angry"]["support"] == 1
    assert paths["confusion"].read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "eval").iterdir()) == sorted(p.name for p in paths.values())


# --- models on disk ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """An untrained tiny model saved as .keras and exported to .onnx (what promote ships)."""
    keras.utils.set_random_seed(1)
    model = build_model({"name": "small_cnn", "width": 0.125, "dense_units": 8})
    model.predict(np.zeros((1, 48, 48, 1), np.float32), verbose=0)  # built, so it can be exported
    folder = tmp_path_factory.mktemp("model")
    model.save(folder / "model.keras")
    model.export(str(folder / "emotune.onnx"), format="onnx", verbose=False)
    return model, folder


def test_load_predictor_keras_and_onnx_agree(tiny_model):
    model, folder = tiny_model
    x = np.random.default_rng(0).integers(0, 256, (5, 48, 48), dtype=np.uint8)
    expected = model.predict(to_model_input(x), verbose=0)
    for name in ("model.keras", "emotune.onnx"):
        probs = evaluation.load_predictor(folder / name, batch_size=2)(x)  # batches of 2, 2 and 1
        assert probs.shape == (5, NUM_CLASSES), name
        np.testing.assert_allclose(probs, expected, atol=1e-5, err_msg=name)
    with pytest.raises(FileNotFoundError):
        evaluation.load_predictor(folder / "missing.keras")
    (folder / "model.pt").write_bytes(b"")
    with pytest.raises(ValueError, match=r"onnx or \.keras"):
        evaluation.load_predictor(folder / "model.pt")


def stage_inputs(tmp_path, monkeypatch, tiny_model, sizes: dict[str, int]):
    """A smoke configuration in tmp_path with random prepared splits of `sizes`, the tiny model as the
    train stage's output and an empty MLflow run for run.json to name: (cfg, run)."""
    from emotune import tracking
    from emotune.config import compose
    from emotune.data.prepare import save_npz

    _, folder = tiny_model
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    cfg = compose(["experiment=smoke"])
    rng = np.random.default_rng(2)
    (tmp_path / cfg.paths.prepared).mkdir(parents=True)
    for split, n in sizes.items():
        x = rng.integers(0, 256, (n, 48, 48), dtype=np.uint8)
        save_npz(tmp_path / cfg.paths.prepared / f"{split}.npz", x=x, y=(np.arange(n) % 7).astype(np.uint8))
    train_out = tmp_path / cfg.paths.train_out
    train_out.mkdir(parents=True)
    (train_out / "model.keras").write_bytes((folder / "model.keras").read_bytes())
    with tracking.start_run(cfg) as run:
        pass
    return cfg, run


@pytest.mark.slow
@pytest.mark.parametrize("held_out", [False, True], ids=["validated-on-publictest", "validated-on-holdout"])
def test_evaluate_stage_falls_back_to_validation_into_the_training_run(
    tmp_path, monkeypatch, tiny_model, held_out
):
    """No test.npz: the stage says so in metrics.json (an optimistic figure unless the run validated on
    held-out training rows) and logs into the run that run.json names."""
    import mlflow

    from emotune.atomic import write_json

    cfg, run = stage_inputs(tmp_path, monkeypatch, tiny_model, {"train": 14, "validation": 21})
    run_json = {"run_id": run.info.run_id}
    if held_out:
        run_json["validation"] = {"source": "holdout", "fraction": 0.1, "rows": 2, "fingerprint": "f"}
    write_json(tmp_path / cfg.paths.train_out / "run.json", run_json)

    headline = evaluation.evaluate_stage(cfg)

    metrics = json.loads((tmp_path / cfg.paths.eval_out / "metrics.json").read_text())
    assert metrics == headline
    assert metrics["split"] == "validation" and metrics["n"] == 21
    assert "no PrivateTest rows" in metrics["split_note"]
    if held_out:
        assert "held out" in metrics["split_note"] and "optimistic" not in metrics["split_note"]
        assert "2 of its own rows (train.validation_holdout=0.1)" in metrics["split_note"]
    else:
        assert "optimistic" in metrics["split_note"]
    assert "tta_accuracy" in metrics  # the smoke config keeps TTA on
    logged = mlflow.MlflowClient().get_run(run.info.run_id)
    assert logged.data.metrics["test_accuracy"] == pytest.approx(metrics["accuracy"])
    assert logged.data.metrics["test_n"] == 21
    assert logged.data.tags["eval_split"] == "validation"
    assert logged.data.tags["eval_split_note"] == metrics["split_note"]
    assert len(mlflow.search_runs(experiment_ids=[run.info.experiment_id])) == 1  # no second run


@pytest.mark.slow
@pytest.mark.parametrize("validated", ["held-out rows", "other rows", "no held-out rows"])
def test_evaluate_stage_never_scores_the_rows_the_model_fitted(tmp_path, monkeypatch, tiny_model, validated):
    """Training rows alone: the stage scores the rows the run held out to validate on, and refuses, writing
    nothing, when it cannot tell which those were."""
    from emotune.atomic import write_json
    from emotune.data.prepare import load_prepared

    cfg, run = stage_inputs(tmp_path, monkeypatch, tiny_model, {"train": 70})
    holdout = 0.2
    cfg.train.validation_holdout = holdout
    held = splits.validation_faces(load_prepared(cfg.paths.prepared), holdout, int(cfg.seed))
    assert held.source == "holdout" and len(held.y) == 14  # a fifth of each class's ten rows
    described = {
        "held-out rows": held.describe(),
        "other rows": {**held.describe(), "fingerprint": "0123456789abcdef"},  # another seed or data
        "no held-out rows": {"source": "validation", "fraction": 0.0, "rows": 21, "fingerprint": "f"},
    }[validated]
    write_json(
        tmp_path / cfg.paths.train_out / "run.json", {"run_id": run.info.run_id, "validation": described}
    )
    eval_out = tmp_path / cfg.paths.eval_out

    refusals = {"other rows": "differ from those the run validated on", "no held-out rows": "held none out"}
    if validated in refusals:
        with pytest.raises(ValueError, match=refusals[validated]):
            evaluation.evaluate_stage(cfg)
        assert not eval_out.exists()
        return
    metrics = evaluation.evaluate_stage(cfg)
    assert metrics["split"] == "holdout" and metrics["n"] == 14  # not the 70 training rows
    assert "optimistic" in metrics["split_note"]
    assert json.loads((eval_out / "metrics.json").read_text())["n"] == 14


# --- emotune evaluate ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthetic_csv(tmp_path_factory):
    return synthesize(tmp_path_factory.mktemp("csv") / "fer2013_synthetic.csv", rows=42, seed=3)


def test_select_rows_for_a_file(synthetic_csv):
    splits = load(synthetic_csv, progress=False).splits()
    _, y, split, note = select_rows(splits, "auto")
    assert split == "test" and "PrivateTest" in note and len(y) == len(splits["test"][1])
    assert select_rows(splits, "PublicTest")[2] == "validation"
    assert len(select_rows(splits, "all")[1]) == 42
    no_private = {k: v for k, v in splits.items() if k != "test"}
    assert "no PrivateTest rows" in select_rows(no_private, "auto")[3]


def test_evaluate_command_json(tiny_model, synthetic_csv, capsys, tmp_path):
    model, folder = tiny_model
    args = [
        "evaluate",
        "--data",
        str(synthetic_csv),
        "--model",
        str(folder / "emotune.onnx"),
        "--split",
        "all",
    ]
    assert main([*args, "--json", "--tta", "--out", str(tmp_path / "eval")]) == 0
    printed = json.loads(capsys.readouterr().out)
    data = load(synthetic_csv, progress=False)
    expected = float((model.predict(to_model_input(data.x), verbose=0).argmax(axis=1) == data.y).mean())
    assert printed["n"] == 42 and printed["split"] == "all"
    assert printed["accuracy"] == pytest.approx(expected)
    assert {"macro_f1", "tta_accuracy", "tta_macro_f1", "model", "data"} <= set(printed)
    assert json.loads((tmp_path / "eval" / "metrics.json").read_text())["accuracy"] == printed["accuracy"]

    assert main(args) == 0  # the human-readable table
    table = capsys.readouterr().out
    assert "accuracy" in table and all(emotion in table for emotion in EMOTIONS)


def test_evaluate_command_errors_are_clear(tiny_model, tmp_path, capsys, monkeypatch):
    _, folder = tiny_model
    bad = tmp_path / "bad.csv"
    bad.write_text("emotion,pixels,Usage\n0," + " ".join(["1"] * 2304) + ",PublicTest\n9,1 2,PublicTest\n")
    assert main(["evaluate", "--data", str(bad), "--model", str(folder / "model.keras")]) == 2
    err = capsys.readouterr().err
    assert "line 3" in err and "label 9" in err
    assert main(["evaluate", "--data", str(bad), "--model", str(tmp_path / "none.keras")]) == 2
    assert "none.keras not found" in capsys.readouterr().err
    monkeypatch.chdir(tmp_path)  # no artifacts/ or models/ here
    assert main(["evaluate", "--data", str(bad)]) == 2
    assert "--model" in capsys.readouterr().err
