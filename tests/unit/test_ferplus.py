"""FER+ soft labels: reading the votes file (with line-numbered errors), mixing votes into the targets,
refusing a file that does not line up with the training rows, and the train config switch."""

from __future__ import annotations

import numpy as np
import pytest

from emotune.data import DataValidationError
from emotune.data.ferplus import VOTE_COLUMNS, load_votes, soft_targets
from emotune.labels import EMOTIONS
from emotune.training import training_targets

HEADER = "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"


def write_votes(path, rows):
    path.write_text("\n".join([HEADER, *rows]) + "\n")
    return path


def test_votes_follow_the_fer2013_label_order(tmp_path):
    path = write_votes(
        tmp_path / "votes.csv",
        [
            "Training,fer0.png,1,2,3,4,5,6,7,8,9,0",
            "PublicTest,fer1.png,9,0,0,0,0,0,1,0,0,0",
            "Training,,0,0,0,0,0,0,0,0,0,10",  # not a face: no emotion votes, empty image name
        ],
    )
    votes = load_votes(path)
    assert votes.shape == (2, 7) and votes.dtype == np.float32
    # EMOTIONS order: angry, disgust, fear, happy, sad, surprise, neutral
    assert dict(zip(EMOTIONS, votes[0], strict=True)) == {
        "angry": 5, "disgust": 6, "fear": 7, "happy": 2, "sad": 4, "surprise": 3, "neutral": 1,
    }  # fmt: skip
    assert votes[1].sum() == 0
    assert load_votes(path, usage="PublicTest").tolist() == [[0, 0, 1, 0, 0, 0, 9]]


def test_bad_votes_are_reported_by_line(tmp_path):
    path = write_votes(
        tmp_path / "votes.csv", ["Training,a.png,1,0,0,0,0,0,0,0,0,0", "Training,b.png,x,0,0,0,0,0,0,0,0,0"]
    )
    with pytest.raises(DataValidationError, match=r"line 3: neutral='x'"):
        load_votes(path)
    missing = tmp_path / "short.csv"
    missing.write_text("Usage,neutral\nTraining,1\n")
    with pytest.raises(DataValidationError, match="missing column"):
        load_votes(missing)
    with pytest.raises(FileNotFoundError, match="soft_labels=none"):
        load_votes(tmp_path / "absent.csv")


def test_soft_targets_mix_label_and_votes():
    labels = np.array([3, 4, 0])
    votes = np.zeros((3, 7), np.float32)
    votes[0, 3] = 8  # happy 8, neutral 2
    votes[0, 6] = 2
    votes[1, 4] = 10  # sad, unanimous
    # row 2: no emotion votes -> stays one-hot
    targets = soft_targets(labels, votes, weight=0.5)
    np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(targets[0, [3, 6]], [0.5 + 0.4, 0.1])
    np.testing.assert_allclose(targets[1], np.eye(7)[4])
    np.testing.assert_allclose(targets[2], np.eye(7)[0])
    np.testing.assert_allclose(soft_targets(labels, votes, 0.0), np.eye(7)[labels])
    with pytest.raises(ValueError, match=r"0\.\.1"):
        soft_targets(labels, votes, 1.5)


def test_misaligned_votes_are_refused():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 500)
    votes = np.eye(7, dtype=np.float32)[labels] * 10
    with pytest.raises(ValueError, match="does not line up"):
        soft_targets(labels, np.roll(votes, 1, axis=0), 0.5)
    with pytest.raises(ValueError, match="original order"):
        soft_targets(labels[:-1], votes, 0.5)


def test_training_targets_switch(tmp_path):
    labels = np.array([0, 6])
    path = write_votes(
        tmp_path / "votes.csv", ["Training,a.png,0,0,0,0,10,0,0,0,0,0", "Training,b.png,6,0,0,0,0,0,0,4,0,0"]
    )
    assert training_targets({"soft_labels": "none"}, labels) is None
    cfg = {"soft_labels": "ferplus", "ferplus_path": str(path), "soft_label_weight": 0.25}
    np.testing.assert_allclose(training_targets(cfg, labels), np.eye(7)[labels])  # votes agree with labels
    with pytest.raises(ValueError, match="expected none or ferplus"):
        training_targets({"soft_labels": "fer+"}, labels)


@pytest.mark.slow
def test_real_ferplus_lines_up_with_real_fer2013(shared_data):
    from emotune.data import load_csv

    data = load_csv(shared_data / "fer2013" / "fer2013.csv.gz")
    train_labels = data.y[data.split == 0]
    votes = load_votes(shared_data / "ferplus" / "fer2013new_train_publictest.csv")
    targets = soft_targets(train_labels, votes, 0.5)  # raises if misaligned
    assert targets.shape == (28709, 7)


@pytest.mark.slow
def test_the_train_stage_trains_on_soft_targets_and_refuses_misaligned_votes(tmp_path, monkeypatch):
    import mlflow

    from emotune.config import compose
    from emotune.data import load_prepared, prepare, synthesize
    from emotune.training import train_stage

    monkeypatch.chdir(tmp_path)  # the MLflow store and its artifacts land here
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = synthesize(tmp_path / "fer2013_synthetic.csv", rows=140, seed=5)
    prepare(raw, tmp_path / "prepared", synthetic=True, progress=False)
    labels = load_prepared(tmp_path / "prepared")["train"][1]
    columns = HEADER.split(",")[2:]
    rows = []
    for label in labels:  # 8 votes for the face's label, 2 for the next emotion
        votes = dict.fromkeys(columns, 0)
        votes[VOTE_COLUMNS[label]] = 8
        votes[VOTE_COLUMNS[(label + 1) % 7]] = 2
        rows.append("Training,x.png," + ",".join(str(votes[c]) for c in columns))
    aligned = write_votes(tmp_path / "votes.csv", rows)
    shifted = write_votes(tmp_path / "shifted.csv", rows[1:] + rows[:1])
    overrides = [
        "experiment=smoke",
        "train.epochs=1",
        "train.soft_labels=ferplus",
        f"paths.prepared={tmp_path / 'prepared'}",
        f"paths.train_out={tmp_path / 'train'}",
        f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
    ]

    metrics = train_stage(compose([*overrides, f"train.ferplus_path={aligned}"]), verbose=0)
    assert metrics["epochs_run"] == 1 and (tmp_path / "train" / "model.keras").is_file()
    assert mlflow.get_run(metrics["run_id"]).data.params["train.soft_labels"] == "ferplus"

    with pytest.raises(ValueError, match="does not line up"):
        train_stage(compose([*overrides, f"train.ferplus_path={shifted}"]), verbose=0)
