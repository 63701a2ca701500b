"""Training core and tf.data input: class weights, learning-rate schedules, precision, strategies, the
dataset's tensors, and a real (tiny) fit with its checkpoint."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from emotune import datasets, training
from emotune.labels import NUM_CLASSES
from emotune.model import build_model
from emotune.preprocess import to_model_input

TINY_MODEL = {"name": "small_cnn", "width": 0.125, "dense_units": 8}


def faces(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 48, 48), dtype=np.uint8), (np.arange(n) % NUM_CLASSES).astype(np.uint8)


# --- class weights ------------------------------------------------------------------------------------------


def test_class_weights_balanced_and_sqrt():
    # 7 classes, 14 rows: class 0 has 8, classes 1..6 one each -> balanced = 14 / (7 * count)
    labels = np.array([0] * 8 + [1, 2, 3, 4, 5, 6])
    balanced = training.class_weights(labels, "balanced")
    assert balanced[0] == pytest.approx(0.25)
    assert all(balanced[c] == pytest.approx(2.0) for c in range(1, 7))
    sqrt = training.class_weights(labels, "sqrt")
    assert sqrt[0] == pytest.approx(0.5) and sqrt[3] == pytest.approx(np.sqrt(2.0))
    assert training.class_weights(labels, "none") is None
    with pytest.raises(ValueError, match="class_weights"):
        training.class_weights(labels, "inverse")


def test_class_weights_survive_an_absent_class():
    weights = training.class_weights(np.array([0, 0, 1, 1]), "balanced")
    assert len(weights) == NUM_CLASSES and all(np.isfinite(list(weights.values())))


# --- learning rate ------------------------------------------------------------------------------------------


def test_learning_rate_none_and_plateau_are_constant():
    cfg = {"learning_rate": 1e-3, "epochs": 10}
    assert training.learning_rate({**cfg, "lr_schedule": "none"}, 100) == pytest.approx(1e-3)
    assert training.learning_rate({**cfg, "lr_schedule": "plateau"}, 100) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="lr_schedule"):
        training.learning_rate({**cfg, "lr_schedule": "step"}, 100)


def test_cosine_schedule_with_warmup():
    cfg = {"learning_rate": 1e-3, "epochs": 10, "lr_schedule": "cosine", "warmup_epochs": 2}
    schedule = training.learning_rate(cfg, steps_per_epoch=10)  # 100 steps, 20 of warm-up

    def lr(step: int) -> float:
        return float(keras.ops.convert_to_numpy(schedule(step)))

    assert lr(0) == pytest.approx(1e-4)  # warm-up starts at a tenth
    assert lr(10) == pytest.approx(5.5e-4, rel=1e-3)  # linear: half-way
    assert lr(20) == pytest.approx(1e-3, rel=1e-3)  # the peak
    assert lr(60) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5), rel=1e-3)  # cosine half-way
    assert lr(100) == pytest.approx(1e-5, rel=1e-3)  # alpha = 1% of the peak
    assert lr(20) > lr(40) > lr(60) > lr(80) > lr(100)


def test_callbacks_follow_the_config(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(NUM_CLASSES)])
    base = {"learning_rate": 1e-3, "lr_schedule": "none", "early_stopping_patience": 3}
    kinds = [type(cb) for cb in training.make_callbacks(base, model, tmp_path / "m.keras")]
    assert keras.callbacks.EarlyStopping in kinds and keras.callbacks.ReduceLROnPlateau not in kinds
    plateau_cfg = {**base, "lr_schedule": "plateau", "plateau_patience": 2}
    plateau = training.make_callbacks(plateau_cfg, model, "m.keras")
    reduce = next(cb for cb in plateau if isinstance(cb, keras.callbacks.ReduceLROnPlateau))
    assert reduce.patience == 2 and reduce.factor == pytest.approx(0.5)
    stops = next(cb for cb in plateau if isinstance(cb, keras.callbacks.EarlyStopping))
    assert stops.monitor == "val_accuracy" and stops.restore_best_weights and stops.patience == 3
    no_stop = training.make_callbacks({**base, "early_stopping_patience": 0}, model, "m.keras")
    assert not any(isinstance(cb, keras.callbacks.EarlyStopping) for cb in no_stop)


def test_checkpoint_saves_only_improvements_atomically(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(NUM_CLASSES)], name="inference")
    path = tmp_path / "out" / "model.keras"
    checkpoint = training.BestModelCheckpoint(model, path)
    checkpoint.on_epoch_end(0, {"val_accuracy": 0.2})
    first = path.stat().st_mtime_ns
    checkpoint.on_epoch_end(1, {"val_accuracy": 0.1})
    assert path.stat().st_mtime_ns == first and checkpoint.best_epoch == 1
    checkpoint.on_epoch_end(2, {"val_accuracy": 0.5})
    assert checkpoint.best_epoch == 3 and checkpoint.best == pytest.approx(0.5)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.keras"]  # no temp files left
    with pytest.raises(KeyError, match="val_accuracy"):
        checkpoint.on_epoch_end(3, {"accuracy": 0.9})


# --- precision and strategy ---------------------------------------------------------------------------------


def test_precision_policy_sets_and_restores():
    before = keras.mixed_precision.global_policy().name
    with training.precision_policy("mixed_bfloat16") as name:
        assert name == "mixed_bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == before
    assert training.resolve_precision("float32") == "float32"
    assert training.resolve_precision("auto") in ("float32", "mixed_bfloat16")
    with pytest.raises(ValueError, match="precision"), training.precision_policy("int8"):
        pass


def test_strategy_choice(monkeypatch):
    assert training.distribution_strategy("default") is None
    with training.distribution_scope(None):
        pass
    with pytest.raises(ValueError, match="strategy"):
        training.distribution_strategy("parameter_server")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ValueError, match="TF_CONFIG"):
        training.distribution_strategy("multi_worker")


@pytest.mark.parametrize(
    ("tf_config", "workers"),
    [
        (None, 1),
        ({"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, 1),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, 2),
        ({"cluster": {"chief": ["c:1"], "worker": ["a:1", "b:1"]}, "task": {"type": "chief", "index": 0}}, 3),
    ],
)
def test_cluster_workers(monkeypatch, tf_config, workers):
    """How many processes train together: several means the multi-worker trainer (MultiWorkerTrainer)."""
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert training.cluster_workers() == workers


@pytest.mark.parametrize(
    ("tf_config", "chief"),
    [
        (None, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 0}}, True),
        ({"cluster": {"worker": ["a:1", "b:1"]}, "task": {"type": "worker", "index": 1}}, False),
        ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "worker", "index": 0}}, False),
        ({"cluster": {"chief": ["c:1"], "worker": ["a:1"]}, "task": {"type": "chief", "index": 0}}, True),
    ],
)
def test_only_the_chief_writes(monkeypatch, tf_config, chief):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", json.dumps(tf_config))
    assert training.is_chief() is chief


# --- the tf.data input --------------------------------------------------------------------------------------


def test_dataset_tensors_are_the_preprocessing_output():
    x, y = faces(10)
    ds = datasets.make_dataset(x, y, batch_size=4)
    batches = list(ds.as_numpy_iterator())
    assert [len(b[0]) for b in batches] == [4, 4, 2]  # evaluation keeps every row
    features = np.concatenate([b[0] for b in batches])
    targets = np.concatenate([b[1] for b in batches])
    expected = to_model_input(x)
    assert features.dtype == expected.dtype == np.float32 and features.shape == expected.shape
    np.testing.assert_array_equal(features, expected)
    assert targets.dtype == np.float32 and targets.shape == (10, NUM_CLASSES)
    np.testing.assert_array_equal(targets.argmax(axis=1), y)
    np.testing.assert_array_equal(targets.sum(axis=1), 1.0)


def test_training_batches_draw_each_epochs_order_from_seed_and_epoch_alone():
    x, y = faces(40)
    x[:, 0, 0] = np.arange(40)  # identify rows by their first pixel
    targets = datasets.one_hot(y)

    def epochs(seed: int, first: int, count: int) -> list[list[int]]:
        ds, steps = datasets.training_batches(x, targets, batch_size=16, seed=seed, first_epoch=first)
        assert steps == 2  # full batches only
        rows = [int(v) for b in ds.take(steps * count).as_numpy_iterator() for v in b[0][:, 0, 0, 0]]
        return [rows[i : i + 32] for i in range(0, len(rows), 32)]

    run = epochs(1, 0, 3)
    assert all(len(set(e)) == 32 and set(e) <= set(range(40)) for e in run)  # no row twice in an epoch
    assert run[0] != run[1] != run[2]
    assert epochs(1, 2, 1) == run[2:]  # a run resumed at epoch 3 sees what an uninterrupted one saw
    assert epochs(2, 0, 1)[0] != run[0]
    ds, _ = datasets.training_batches(x, targets, batch_size=16, seed=1)
    features, batch_targets = next(ds.as_numpy_iterator())
    np.testing.assert_array_equal(features, to_model_input(x)[features[:, 0, 0, 0].astype(int)])
    np.testing.assert_array_equal(batch_targets, targets[features[:, 0, 0, 0].astype(int)])
    with pytest.raises(ValueError, match="targets of shape"):
        datasets.training_batches(x, targets[:5], batch_size=16, seed=0)


def test_dataset_refuses_bad_labels():
    x, y = faces(10)
    with pytest.raises(ValueError, match=r"0\.\.6"):
        datasets.make_dataset(x, np.full(10, 7, np.uint8), batch_size=4)
    with pytest.raises(ValueError, match="10 faces but 9 labels"):
        datasets.make_dataset(x, y[:9], batch_size=4)


# --- a real fit ---------------------------------------------------------------------------------------------


def fit_on(
    x: np.ndarray, y: np.ndarray, trainer: keras.Model, model: keras.Model, train_cfg: dict, path, **kwargs
) -> dict:
    """training.fit on the faces in seeded, shuffled batches of 16, validated on the first 32."""
    train, steps = datasets.training_batches(x, datasets.one_hot(y), batch_size=16, seed=0)
    validation = datasets.make_dataset(x[:32], y[:32], batch_size=16)
    return training.fit(trainer, model, train, validation, train_cfg, path, steps_per_epoch=steps, **kwargs)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """Three epochs of a tiny model in mixed_bfloat16 on 64 random faces: the stage's own fit loop."""
    keras.utils.set_random_seed(0)
    out = tmp_path_factory.mktemp("fit")
    train_cfg = {
        "epochs": 3,
        "learning_rate": 1e-3,
        "lr_schedule": "cosine",
        "early_stopping_patience": 0,
        "augment": {"enabled": True, "flip": True, "translate": 0.1},
    }
    x, y = faces(64)
    with training.precision_policy("mixed_bfloat16"):
        model = build_model(TINY_MODEL)
        trainer = training.training_model(model, train_cfg, steps_per_epoch=4, seed=0)
    export = training.float32_twin(lambda: build_model(TINY_MODEL))
    result = fit_on(
        x,
        y,
        trainer,
        model,
        train_cfg,
        out / "model.keras",
        class_weight=training.class_weights(y, "balanced"),
        export_model=export,
        verbose=0,
    )
    return result, model, export, out, x


def test_fit_history_and_best_epoch(fitted):
    result, *_ = fitted
    history = result["history"]
    assert [r["epoch"] for r in history] == [1, 2, 3] and result["epochs_run"] == 3
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(history[0])
    best = max(range(3), key=lambda i: (history[i]["val_accuracy"], -i))
    assert result["best_epoch"] == best + 1
    assert result["best_val_accuracy"] == pytest.approx(history[best]["val_accuracy"])
    assert history[0]["learning_rate"] > history[-1]["learning_rate"]  # the cosine schedule decays


def test_checkpoint_is_the_float32_inference_model(fitted):
    _, model, export, out, x = fitted
    saved = keras.saving.load_model(out / "model.keras", compile=False)
    assert saved.name == model.name and "augment" not in [layer.name for layer in saved.layers]
    assert {layer.dtype_policy.name for layer in saved.layers} == {"float32"}
    # what trained was mixed precision
    assert model.get_layer("block1_conv1").dtype_policy.name == "mixed_bfloat16"
    inputs = to_model_input(x[:8])
    np.testing.assert_allclose(saved.predict(inputs, verbose=0), export.predict(inputs, verbose=0), atol=1e-6)
    # float32 twin of the bfloat16 model: same weights, predictions within bfloat16 rounding
    np.testing.assert_allclose(saved.predict(inputs, verbose=0), model.predict(inputs, verbose=0), atol=0.05)


def test_ema_validates_and_saves_the_averaged_weights(tmp_path):
    """train.ema_momentum: the checkpoint holds the moving average of the weights after every step (checked
    against the same average computed here from the raw weights), and validation scored exactly that."""
    x, y = faces(64, seed=1)
    momentum = 0.5  # strong, so four steps leave the average far from the last weights
    keras.utils.set_random_seed(0)
    train_cfg = {
        "epochs": 1,
        "learning_rate": 1e-2,
        "early_stopping_patience": 0,
        "ema_momentum": momentum,
        "augment": {"enabled": False},
    }
    model = build_model(TINY_MODEL)
    trainer = training.training_model(model, train_cfg, steps_per_epoch=4, seed=0)
    assert trainer.optimizer.use_ema
    raw: list[list[np.ndarray]] = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: raw.append([w.numpy() for w in model.trainable_weights])
    )
    path = tmp_path / "ema.keras"
    result = fit_on(
        x,
        y,
        trainer,
        model,
        train_cfg,
        path,
        callbacks=[record],
        verbose=0,
    )
    assert len(raw) == 4
    expected = raw[0]  # Keras starts the average at the first step's weights
    for step in raw[1:]:
        expected = [momentum * a + (1 - momentum) * w for a, w in zip(expected, step, strict=True)]
    saved = keras.saving.load_model(path, compile=False)
    for got, want in zip(saved.trainable_weights, expected, strict=True):
        np.testing.assert_allclose(got.numpy(), want, atol=1e-5)
    assert max(float(np.max(np.abs(w - a))) for w, a in zip(raw[-1], expected, strict=True)) > 1e-3
    inputs = to_model_input(x[:32])
    accuracy = float((saved.predict(inputs, verbose=0).argmax(1) == y[:32]).mean())
    assert accuracy == pytest.approx(result["best_val_accuracy"])  # the weights validation scored
    with pytest.raises(ValueError, match="ema_momentum"):
        training.make_optimizer({"learning_rate": 1e-3, "ema_momentum": 1.5}, 10)


def test_history_records_and_curves(tmp_path):
    records = training.history_records({"loss": [2.0, 1.5], "val_accuracy": [0.1, 0.3]})
    assert records == [
        {"epoch": 1, "loss": 2.0, "val_accuracy": 0.1},
        {"epoch": 2, "loss": 1.5, "val_accuracy": 0.3},
    ]
    training.plot_training_curves(records, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_training_without_augmentation_trains_the_model_directly():
    x, y = faces(8)
    model = build_model(TINY_MODEL)
    trainer = training.training_model(
        model, {"learning_rate": 1e-3, "epochs": 1, "augment": {"enabled": False}}, steps_per_epoch=1
    )
    assert [layer.name for layer in trainer.layers if layer.name == "augment"] == []
    before = [w.copy() for w in model.get_weights()]
    trainer.train_on_batch(to_model_input(x), datasets.one_hot(y))
    assert any(not np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))


# --- the cheaper recipe: one channel, a central crop, SGD with decoupled weight decay ----------------------


def test_one_channel_and_a_central_crop_ignore_the_border():
    keras.utils.set_random_seed(0)
    model = build_model({**TINY_MODEL, "channels": 1, "crop": 44})
    names = [layer.name for layer in model.layers]
    assert "gray_to_rgb" not in names and "crop" in names
    assert model.get_layer("block1_conv1").kernel.shape[2] == 1  # one input channel
    x, _ = faces(4)
    bordered = x.copy()
    bordered[:, :2], bordered[:, -2:], bordered[:, :, :2], bordered[:, :, -2:] = 0, 255, 0, 255
    same = model.predict(to_model_input(x), verbose=0), model.predict(to_model_input(bordered), verbose=0)
    np.testing.assert_allclose(*same, atol=1e-6)  # only the central 44x44 reaches the network
    inner = x.copy()
    inner[:, 20:28, 20:28] = 255 - inner[:, 20:28, 20:28]
    assert not np.allclose(same[0], model.predict(to_model_input(inner), verbose=0), atol=1e-6)
    assert build_model(TINY_MODEL).get_layer("gray_to_rgb") is not None  # the default keeps three channels
    with pytest.raises(ValueError, match=r"model\.crop"):
        build_model({**TINY_MODEL, "crop": 60})


def test_sgd_weight_decay_spares_batch_norm_and_biases():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    outputs = keras.layers.BatchNormalization()(keras.layers.Dense(3)(inputs))
    model = keras.Model(inputs, outputs)
    optimizer = training.make_optimizer(
        {"optimizer": "sgd", "learning_rate": 0.1, "weight_decay": 0.5}, steps_per_epoch=1
    )
    for v in model.trainable_variables:  # non-zero biases and offsets, so a decay would show
        v.assign(np.full(v.shape, 2.0, np.float32))
    optimizer.apply_gradients([(np.zeros(v.shape, np.float32), v) for v in model.trainable_variables])
    after = {v.path.split("/")[-1]: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}
    np.testing.assert_allclose(after["kernel"], 2.0 * (1 - 0.1 * 0.5))  # decoupled: lr x decay per step
    for name in ("bias", "gamma", "beta"):
        np.testing.assert_array_equal(after[name], 2.0)
    assert training.make_optimizer({"optimizer": "sgd", "learning_rate": 0.1}, 1).weight_decay is None
