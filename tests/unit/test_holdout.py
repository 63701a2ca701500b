"""Validation faces held out of Training (train.validation_holdout): stratified, seeded, recorded by the run,
and the reason promote compares only runs that validated on the same faces."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emotune.data.splits import (
    fingerprint,
    held_out_split,
    holdout_fraction,
    stratified_holdout,
    validation_faces,
)

# FER2013's Training counts per class: disgust is the rare one
FER2013_TRAINING = [3995, 436, 4097, 7215, 4830, 3171, 4965]


def fer2013_like_labels() -> np.ndarray:
    labels = np.repeat(np.arange(7), FER2013_TRAINING).astype(np.uint8)
    return np.random.default_rng(0).permutation(labels)


def test_the_holdout_keeps_every_class_share_and_is_seeded():
    labels = fer2013_like_labels()
    fit, held = stratified_holdout(labels, 0.1, seed=42)
    assert len(fit) + len(held) == len(labels) and not np.intersect1d(fit, held).size
    assert np.all(np.diff(held) > 0) and np.all(np.diff(fit) > 0)
    per_class = np.bincount(labels[held], minlength=7)
    np.testing.assert_array_equal(per_class, np.round(0.1 * np.array(FER2013_TRAINING)).astype(int))
    np.testing.assert_array_equal(stratified_holdout(labels, 0.1, seed=42)[1], held)
    assert not np.array_equal(stratified_holdout(labels, 0.1, seed=43)[1], held)


def test_a_tiny_class_keeps_a_face_on_each_side():
    labels = np.array([0] * 50 + [1, 1] + [2])
    fit, held = stratified_holdout(labels, 0.1, seed=0)
    assert (labels[held] == 1).sum() == 1 and (labels[fit] == 1).sum() == 1
    assert (labels[fit] == 2).sum() == 1  # a single face stays in training
    assert len(stratified_holdout(labels, 0.0, seed=0)[1]) == 0


@pytest.mark.parametrize(
    ("setting", "has_test", "expected"),
    [("auto", False, 0.1), ("auto", True, 0.0), (None, False, 0.0), (0, False, 0.0), ("0.2", True, 0.2)],
)
def test_holdout_fraction(setting, has_test, expected):
    assert holdout_fraction(setting, has_test) == expected


@pytest.mark.parametrize("setting", ["some", 1.0, -0.1, 2])
def test_a_bad_holdout_setting_says_what_is_expected(setting):
    with pytest.raises(ValueError, match=r"train\.validation_holdout=.*expected auto, 0 or a fraction"):
        holdout_fraction(setting, False)


def splits_without_test(n_train: int = 70, n_val: int = 21) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(1)
    return {
        split: (rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), (np.arange(n) % 7).astype(np.uint8))
        for split, n in (("train", n_train), ("validation", n_val))
    }


def test_validation_faces_hold_out_training_rows_when_there_is_no_test_split():
    splits = splits_without_test()
    validation = validation_faces(splits, "auto", seed=3)
    x_train, y_train = splits["train"]
    _, held = stratified_holdout(y_train, 0.1, seed=3)
    assert validation.source == "holdout" and len(validation.y) == len(held) == 7
    np.testing.assert_array_equal(validation.x, x_train[held])
    assert len(validation.fit_rows) == 63 and not np.isin(held, validation.fit_rows).any()
    # PublicTest chose nothing, so it is the split to report on
    assert held_out_split(splits, validation) == "validation"
    assert validation.describe() == {
        "source": "holdout",
        "fraction": 0.1,
        "rows": 7,
        "fingerprint": fingerprint(x_train[held], y_train[held]),
    }


def test_validation_faces_are_the_validation_split_when_asked_or_when_there_is_a_test_split():
    splits = splits_without_test()
    validation = validation_faces(splits, 0, seed=3)
    assert validation.source == "validation" and validation.x is splits["validation"][0]
    assert len(validation.fit_rows) == 70
    assert held_out_split(splits, validation) is None  # every split helped choose: nothing to report on
    splits["test"] = splits["validation"]
    assert validation_faces(splits, "auto", seed=3).source == "validation"
    assert held_out_split(splits, validation) == "test"


def test_no_validation_split_and_no_holdout_says_what_to_set():
    splits = {"train": splits_without_test()["train"]}
    with pytest.raises(ValueError, match=r"no validation split.*train\.validation_holdout"):
        validation_faces(splits, 0, seed=0)


def test_the_fingerprint_changes_with_a_single_label_or_pixel():
    x, y = splits_without_test()["validation"]
    base = fingerprint(x, y)
    assert fingerprint(x.copy(), y.copy()) == base
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 7
    x2 = x.copy()
    x2[5, 10, 10] ^= 1
    assert fingerprint(x, y2) != base and fingerprint(x2, y) != base


@pytest.mark.slow
def test_the_train_stage_validates_on_held_out_training_rows_and_records_them(tmp_path, monkeypatch):
    import mlflow

    from emotune.config import compose
    from emotune.data import load_prepared, prepare, synthesize
    from emotune.training import train_stage

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    raw = synthesize(tmp_path / "fer2013_synthetic.csv", rows=140, seed=5)
    prepare(raw, tmp_path / "prepared", synthetic=True, progress=False)
    x_train, y_train = load_prepared(tmp_path / "prepared")["train"]
    cfg = compose(
        [
            "experiment=smoke",
            "train.epochs=1",
            "train.soft_labels=none",  # no FER+ votes beside these synthetic faces
            "train.validation_holdout=0.25",  # the synthetic data has a test split: ask explicitly
            f"paths.prepared={tmp_path / 'prepared'}",
            f"paths.train_out={tmp_path / 'train'}",
            f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}",
        ]
    )

    metrics = train_stage(cfg, verbose=0)

    _, held = stratified_holdout(y_train, 0.25, seed=int(cfg.seed))
    expected = fingerprint(x_train[held], y_train[held])
    recorded = json.loads((tmp_path / "train" / "run.json").read_text())["validation"]
    assert recorded == {"source": "holdout", "fraction": 0.25, "rows": len(held), "fingerprint": expected}
    run = mlflow.get_run(metrics["run_id"])
    assert run.data.tags["validation_set"] == expected and run.data.tags["validation_source"] == "holdout"
    assert run.data.metrics["val_rows"] == len(held)
    assert run.data.metrics["train_rows"] == len(y_train) - len(held)
