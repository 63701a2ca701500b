"""Backend-neutral training core: augmentation, optimiser, loss and the fit loop.

Only Keras and NumPy here, so the same code trains under TensorFlow on a CPU and under JAX/PyTorch on a GPU
machine without TensorFlow. The DVC stage (pipelines/train.py) adds the tf.data input, MLflow and checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import layers

from emotune.atomic import atomic_output, write_json
from emotune.labels import NUM_CLASSES

if TYPE_CHECKING:  # resume needs OmegaConf, which a machine that only trains (emotune.portable) may lack
    from emotune.resume import TrainingBackup


def resolve_precision(precision: str) -> str:
    """auto -> mixed_bfloat16 where the hardware has fast bfloat16 (AMX/AVX512-BF16 CPUs, recent GPUs)."""
    if precision != "auto":
        return precision
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        flags = ""
    if "amx_bf16" in flags or "avx512_bf16" in flags:
        return "mixed_bfloat16"
    return "float32"


def make_augmenter(aug_cfg: Mapping[str, Any], seed: int | None = None) -> keras.Sequential:
    """Random flips, shifts, rotations, zoom, brightness and contrast on 0..255 grey faces (training only)."""
    steps: list[layers.Layer] = []
    if aug_cfg.get("enabled", True):
        if aug_cfg.get("flip", True):
            steps.append(layers.RandomFlip("horizontal", seed=seed))
        if aug_cfg.get("rotate", 0):
            steps.append(layers.RandomRotation(float(aug_cfg["rotate"]), fill_mode="nearest", seed=seed))
        if aug_cfg.get("translate", 0):
            t = float(aug_cfg["translate"])
            steps.append(layers.RandomTranslation(t, t, fill_mode="nearest", seed=seed))
        if aug_cfg.get("zoom", 0):
            z = float(aug_cfg["zoom"])
            steps.append(layers.RandomZoom((-z, z), fill_mode="nearest", seed=seed))
        if aug_cfg.get("brightness", 0):
            steps.append(
                layers.RandomBrightness(float(aug_cfg["brightness"]), value_range=(0, 255), seed=seed)
            )
        if aug_cfg.get("contrast", 0):
            steps.append(layers.RandomContrast(float(aug_cfg["contrast"]), value_range=(0, 255), seed=seed))
    return keras.Sequential(steps, name="augment")


def learning_rate(
    train_cfg: Mapping[str, Any], steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    base = float(train_cfg["learning_rate"])
    schedule = train_cfg.get("lr_schedule", "none")
    if schedule in ("none", "plateau"):  # plateau is a callback (ReduceLROnPlateau), not a schedule
        return base
    if schedule == "cosine":
        total = max(1, int(train_cfg["epochs"]) * steps_per_epoch)
        warmup = int(train_cfg.get("warmup_epochs", 0)) * steps_per_epoch
        return keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=base / 10 if warmup else base,
            decay_steps=max(1, total - warmup),
            warmup_target=base if warmup else None,
            warmup_steps=warmup,
            alpha=0.01,
        )
    raise ValueError(f"train.lr_schedule={schedule!r}: expected none, cosine or plateau")


def ema_momentum(train_cfg: Mapping[str, Any]) -> float | None:
    """train.ema_momentum: None (off) or the per-step momentum of the weights' moving average."""
    value = train_cfg.get("ema_momentum")
    if value is None:
        return None
    if not 0.0 < float(value) < 1.0:
        raise ValueError(f"train.ema_momentum={value!r}: expected null or a number between 0 and 1")
    return float(value)


def make_optimizer(train_cfg: Mapping[str, Any], steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr = learning_rate(train_cfg, steps_per_epoch)
    name = train_cfg.get("optimizer", "adam")
    momentum = ema_momentum(train_cfg)
    ema = {"use_ema": True, "ema_momentum": momentum} if momentum is not None else {}
    if name == "adam":
        return keras.optimizers.Adam(lr, **ema)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=float(train_cfg.get("weight_decay") or 1e-4), **ema)
    if name == "sgd":
        # Keras' weight decay is decoupled (weights shrink by lr * weight_decay per step); batch-norm scales
        # and offsets and biases are left alone, as in the published FER2013 VGG recipes.
        decay = train_cfg.get("weight_decay")
        optimizer = keras.optimizers.SGD(
            lr, momentum=0.9, nesterov=True, weight_decay=float(decay) if decay else None, **ema
        )
        if decay:
            optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
        return optimizer
    raise ValueError(f"train.optimizer={name!r}: expected adam, adamw or sgd")


def class_weights(labels: np.ndarray, mode: str) -> dict[int, float] | None:
    """none | balanced (n / (k * count)) | sqrt (its square root: a milder correction)."""
    if mode == "none":
        return None
    counts = np.bincount(labels, minlength=NUM_CLASSES).astype(np.float64)
    weights = counts.sum() / (NUM_CLASSES * np.maximum(counts, 1))
    if mode == "sqrt":
        weights = np.sqrt(weights)
    elif mode != "balanced":
        raise ValueError(f"train.class_weights={mode!r}: expected none, balanced or sqrt")
    return {i: float(w) for i, w in enumerate(weights)}


class MultiWorkerTrainer(keras.Model):
    """The trainer for a cluster of several workers (MultiWorkerMirroredStrategy), around two Keras 3 bugs.

    Keras 3 (3.15 at least, keras-team/keras#20585) cannot fit under that strategy once a second worker
    takes part: before the first step it averages an (x, y) batch across the workers to learn the shapes,
    and the cross-worker reduce refuses a pair; after every step it averages each log value over axis 0,
    which a scalar does not have. So `fit` runs with the strategy taken from its scope instead of the one
    the model was built under (Keras then learns the shapes when it traces the first step; every variable
    already exists), and the steps return their logs as one-element vectors, averaged across the workers
    into scalars.
    """

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        strategy, self._distribute_strategy = self._distribute_strategy, None
        try:
            with strategy.scope():
                return super().fit(*args, **kwargs)
        finally:
            self._distribute_strategy = strategy

    def wait_for_the_cluster(self) -> None:
        """Return once every worker has called this: the workers leave together, after the chief's logging
        (a worker that stops before the chief does is reported by TensorFlow as crashed)."""
        import tensorflow as tf

        strategy = self._distribute_strategy
        ones = strategy.experimental_distribute_values_from_function(lambda _: tf.constant(1.0))
        strategy.reduce(tf.distribute.ReduceOp.SUM, ones, axis=None)

    def train_step(self, data: Any) -> dict[str, Any]:
        return {k: keras.ops.reshape(v, (1,)) for k, v in super().train_step(data).items()}

    def test_step(self, data: Any) -> dict[str, Any]:
        return {k: keras.ops.reshape(v, (1,)) for k, v in super().test_step(data).items()}


def training_model(
    model: keras.Model,
    train_cfg: Mapping[str, Any],
    steps_per_epoch: int,
    seed: int | None = None,
    trainer_class: type[keras.Model] = keras.Model,
) -> keras.Model:
    """`model` behind the augmenter, compiled: what `fit` trains. `model` itself stays augmentation-free.

    `trainer_class`: MultiWorkerTrainer under a strategy with several workers.
    """
    augmenter = make_augmenter(train_cfg.get("augment", {}), seed=seed)
    inputs = keras.Input(shape=model.input_shape[1:], name="face")
    # An empty Sequential cannot be built (augment.enabled=false): then the faces go straight in.
    trainer = trainer_class(inputs, model(augmenter(inputs) if augmenter.layers else inputs), name="trainer")
    trainer.compile(
        optimizer=make_optimizer(train_cfg, steps_per_epoch),
        loss=keras.losses.CategoricalCrossentropy(
            label_smoothing=float(train_cfg.get("label_smoothing", 0.0))
        ),
        metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")],
    )
    return trainer


def steps_per_epoch(n_rows: int, batch_size: int) -> int:
    return max(1, math.ceil(n_rows / batch_size))


# --- Precision, distribution, checkpoints and the fit loop ------------------------------------------------


@contextlib.contextmanager
def precision_policy(precision: str) -> Iterator[str]:
    """Build layers under `precision` (auto resolved); the previous global policy comes back afterwards.

    Layers keep the policy they were built with, so only model construction needs to happen inside.
    """
    name = resolve_precision(precision)
    if name not in ("float32", "mixed_bfloat16", "mixed_float16"):
        raise ValueError(
            f"train.precision={precision!r}: expected auto, float32, mixed_bfloat16 or mixed_float16"
        )
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(name)
    try:
        yield name
    finally:
        keras.mixed_precision.set_global_policy(previous)


def distribution_strategy(strategy: str) -> Any:
    """`default` -> None (one device); TensorFlow's `mirrored` (all local GPUs, synchronous) or
    `multi_worker` (several machines described by TF_CONFIG) -> that tf.distribute strategy.

    Build and compile the model in its scope(). train.batch_size stays the global batch: tf.distribute
    splits it across replicas.
    """
    if strategy == "default":
        return None
    if strategy not in ("mirrored", "multi_worker"):
        raise ValueError(f"train.strategy={strategy!r}: expected default, mirrored or multi_worker")
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"train.strategy={strategy!r} needs the TensorFlow backend (KERAS_BACKEND=tensorflow)"
        )
    import tensorflow as tf  # only the tf.distribute strategies need TensorFlow itself

    if strategy == "mirrored":
        return tf.distribute.MirroredStrategy()
    if "TF_CONFIG" not in os.environ:
        raise ValueError(
            "train.strategy=multi_worker needs TF_CONFIG describing the cluster and this worker's task "
            "(see docs/training.md, train.strategy)"
        )
    return tf.distribute.MultiWorkerMirroredStrategy()


def distribution_scope(strategy: Any) -> contextlib.AbstractContextManager[Any]:
    """The scope to build and compile the model in: the strategy's, or none for None (one device)."""
    return contextlib.nullcontext() if strategy is None else strategy.scope()


def cluster_workers() -> int:
    """How many processes train together: the tasks of TF_CONFIG's cluster (1 without one)."""
    cluster = json.loads(os.environ.get("TF_CONFIG") or "{}").get("cluster", {})
    return max(1, sum(len(cluster.get(kind, [])) for kind in ("chief", "worker")))


def is_chief() -> bool:
    """True except on the non-chief workers of a multi-worker cluster (they must not write outputs)."""
    tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task = tf_config.get("task", {})
    if not task or task.get("type") == "chief":
        return True
    # Without an explicit chief, worker 0 plays that part (as in tf.distribute).
    return (
        "chief" not in tf_config.get("cluster", {})
        and task.get("type") == "worker"
        and task.get("index") == 0
    )


def float32_twin(build: Callable[[], keras.Model]) -> keras.Model:
    """The same architecture built in float32: what gets saved, whatever precision trained it.

    Mixed-precision training keeps float32 master weights, so copying them loses nothing, and serving,
    ONNX export and evaluation then get a plain float32 model.
    """
    with precision_policy("float32"):
        return build()


class BestModelCheckpoint(keras.callbacks.Callback):
    """Save the inference model (not the trainer with its augmenter) whenever `monitor` improves.

    With `export_model` (a float32 twin of `model`), the weights are copied into it and it is saved instead.
    """

    def __init__(
        self,
        model: keras.Model,
        path: Path | str,
        monitor: str = "val_accuracy",
        export_model: keras.Model | None = None,
    ) -> None:
        super().__init__()
        self.inference_model = model
        self.export_model = export_model
        self.path = Path(path)
        self.monitor = monitor
        self.best = -math.inf
        self.best_epoch = 0

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"checkpoint metric {self.monitor!r} missing from {sorted(logs or {})}")
        if float(value) > self.best:
            self.best, self.best_epoch = float(value), epoch + 1
            self.save()

    def save(self) -> None:
        target = self.export_model or self.inference_model
        if self.export_model is not None:
            self.export_model.set_weights(self.inference_model.get_weights())
        with atomic_output(self.path) as tmp:
            target.save(tmp)


class LearningRateLogger(keras.callbacks.Callback):
    """Adds the learning rate in effect to each epoch's logs (history, progress bar, MLflow)."""

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def make_callbacks(
    train_cfg: Mapping[str, Any],
    model: keras.Model,
    checkpoint_path: Path | str,
    export_model: keras.Model | None = None,
) -> list[keras.callbacks.Callback]:
    """Learning-rate logging, best checkpoint by val_accuracy, early stopping and the plateau schedule.

    With train.ema_momentum, validation and the checkpoint see the moving average of the weights: it is
    swapped in at the end of each epoch, before the checkpoint looks (and back out for the next epoch).
    """
    callbacks: list[keras.callbacks.Callback] = [LearningRateLogger()]
    if ema_momentum(train_cfg) is not None:
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    if train_cfg.get("lr_schedule", "none") == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss",
                factor=float(train_cfg.get("plateau_factor", 0.5)),
                patience=int(train_cfg.get("plateau_patience", 3)),
                min_lr=float(train_cfg["learning_rate"]) * 1e-3,
            )
        )
    callbacks.append(BestModelCheckpoint(model, checkpoint_path, export_model=export_model))
    patience = train_cfg.get("early_stopping_patience")
    if patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", mode="max", patience=int(patience), restore_best_weights=True
            )
        )
    return callbacks


def history_records(history: Mapping[str, Sequence[float]]) -> list[dict[str, float]]:
    """Keras History.history ({metric: [per epoch]}) -> [{"epoch": 1, "loss": ..., ...}, ...]."""
    epochs = max((len(v) for v in history.values()), default=0)
    return [
        {"epoch": e + 1, **{k: float(v[e]) for k, v in history.items() if e < len(v)}} for e in range(epochs)
    ]


def fit(
    trainer: keras.Model,
    model: keras.Model,
    train_data: Any,
    val_data: Any,
    train_cfg: Mapping[str, Any],
    checkpoint_path: Path | str,
    *,
    class_weight: dict[int, float] | None = None,
    export_model: keras.Model | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    verbose: int | str = "auto",
    steps_per_epoch: int | None = None,
    backup: TrainingBackup | None = None,
) -> dict[str, Any]:
    """Train, keeping the best epoch's inference model at `checkpoint_path`.

    `train_data` is one epoch of batches, or endless ones with `steps_per_epoch` (datasets.training_batches).
    With `backup` (emotune.resume), the state is backed up after every epoch and, when the backup holds an
    earlier run's state, training continues after its last completed epoch; `train_data` must then start at
    that epoch (backup.initial_epoch). The backup goes before `callbacks`, so whatever they report (MLflow) is
    already backed up.

    Returns {"history": per-epoch records, "best_val_accuracy", "best_epoch", "epochs_run" (this process),
    "train_seconds" (this process), "total_train_seconds" (all processes of the run), "initial_epoch"}.
    """
    standard = make_callbacks(train_cfg, model, checkpoint_path, export_model)
    checkpoint = next(cb for cb in standard if isinstance(cb, BestModelCheckpoint))
    epochs = int(train_cfg["epochs"])
    initial_epoch, before, seconds_before = 0, [], 0.0
    if backup is not None:
        backup.track(standard, checkpoint)
        backup.restore_best_model(export_model)
        initial_epoch, seconds_before = backup.initial_epoch, backup.seconds_before
        before = [r for r in backup.history if r["epoch"] <= initial_epoch]
    start = time.perf_counter()
    result = trainer.fit(
        train_data,
        validation_data=val_data,
        epochs=epochs,
        initial_epoch=initial_epoch,
        steps_per_epoch=steps_per_epoch,
        class_weight=class_weight,
        callbacks=[*standard, *([backup] if backup is not None else []), *callbacks],
        shuffle=False,  # the tf.data pipeline shuffles (seeded); fit cannot shuffle a dataset anyway
        verbose=verbose,
    )
    seconds = time.perf_counter() - start
    records = [{**r, "epoch": r["epoch"] + initial_epoch} for r in history_records(result.history)]
    return {
        "history": before + records,
        "best_val_accuracy": checkpoint.best,
        "best_epoch": checkpoint.best_epoch,
        "epochs_run": len(records),
        "initial_epoch": initial_epoch,
        "train_seconds": seconds,
        "total_train_seconds": seconds_before + seconds,
    }


def plot_training_curves(history: Sequence[Mapping[str, float]], path: Path | str) -> None:
    """Loss and accuracy per epoch, training and validation, side by side (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in history]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-o"), (f"val_{metric}", "--o")):
            if history and key in history[0]:
                ax.plot(epochs, [r[key] for r in history], style, label=key)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=100)
    plt.close(fig)


# --- The train stage ------------------------------------------------------------------------------------


def _training_rows(n_rows: int, cap: int | None, seed: int) -> np.ndarray:
    """Indices of all rows, or a seeded random `cap` of them (quick runs; classes keep their proportions)."""
    if not cap or cap >= n_rows:
        return np.arange(n_rows)
    return np.sort(np.random.default_rng(seed).permutation(n_rows)[: int(cap)])


def training_targets(train_cfg: Mapping[str, Any], labels: np.ndarray) -> np.ndarray | None:
    """Soft targets (N, 7) for `train.soft_labels=ferplus`; None means one-hot labels."""
    mode = str(train_cfg.get("soft_labels", "none"))
    if mode == "none":
        return None
    if mode != "ferplus":
        raise ValueError(f"train.soft_labels={mode!r}: expected none or ferplus")
    from emotune.data.ferplus import load_votes, soft_targets

    votes = load_votes(train_cfg["ferplus_path"], usage="Training")
    return soft_targets(labels, votes, float(train_cfg.get("soft_label_weight", 0.5)))


@dataclass
class TrainingData:
    """What a run trains and validates on, chosen from the prepared arrays by the configuration."""

    x_train: np.ndarray  # uint8 (N, S, S)
    y_train: np.ndarray  # labels (N,)
    targets: np.ndarray  # float32 (N, 7): soft labels, or the one-hot labels
    x_val: np.ndarray
    y_val: np.ndarray
    validation: dict[str, Any]  # source, fraction, rows, fingerprint (emotune.data.splits.Validation)
    data_files: list[Path]  # the inputs that define the run (prepared arrays, FER+ votes)
    report: dict[str, Any]  # the prepare stage's report.json


def training_data(cfg: Any) -> TrainingData:
    """The training rows (all, or a seeded cap), their targets and the validation faces for `cfg`."""
    from emotune.data import load_prepared
    from emotune.data.splits import validation_faces
    from emotune.datasets import one_hot

    train_cfg, seed = cfg.train, int(cfg.seed)
    prepared_dir = Path(cfg.paths.prepared)
    splits = load_prepared(prepared_dir)
    x_all, y_all = splits["train"]
    soft = training_targets(train_cfg, y_all)  # by row of the whole train split (FER+ votes line up)
    validation = validation_faces(splits, train_cfg.get("validation_holdout"), seed)
    fit_rows = validation.fit_rows
    rows = fit_rows[_training_rows(len(fit_rows), train_cfg.get("max_train_rows"), seed)]
    data_files = sorted(prepared_dir.glob("*.npz"))
    if soft is not None:
        data_files.append(Path(train_cfg.ferplus_path))
    report_path = prepared_dir / "report.json"
    return TrainingData(
        x_train=x_all[rows],
        y_train=y_all[rows],
        targets=one_hot(y_all[rows]) if soft is None else soft[rows].astype(np.float32),
        x_val=validation.x,
        y_val=validation.y,
        validation=validation.describe(),
        data_files=data_files,
        report=json.loads(report_path.read_text()) if report_path.is_file() else {},
    )


def run_metrics(
    result: Mapping[str, Any], precision: str, synthetic: bool, images_per_epoch: int
) -> dict[str, Any]:
    """metrics.json of a finished run from `fit`'s result; images/s over the epochs this process ran."""
    metrics = {
        "best_val_accuracy": result["best_val_accuracy"],
        "best_epoch": result["best_epoch"],
        "epochs_run": len(result["history"]),
        "train_seconds": round(result["total_train_seconds"], 2),
        "precision": precision,
        "synthetic": synthetic,
    }
    if result["epochs_run"]:
        metrics["train_images_per_second"] = round(
            result["epochs_run"] * images_per_epoch / max(result["train_seconds"], 1e-9), 1
        )
    return metrics


def write_run_outputs(out: Path, history: Sequence[Mapping[str, float]], metrics: Mapping[str, Any]) -> None:
    """history.json, metrics.json and training_curves.png: what every finished run leaves in its folder."""
    write_json(out / "history.json", list(history))
    write_json(out / "metrics.json", dict(metrics))
    plot_training_curves(history, out / "training_curves.png")


def train_stage(
    cfg: Any,
    out_dir: Path | str | None = None,
    verbose: int | str = "auto",
    code_files: Sequence[Path | str] = (),
) -> dict[str, Any]:
    """The DVC `train` stage: prepared arrays -> best model, history, curves and an MLflow run.

    Writes to `out_dir` (default cfg.paths.train_out): model.keras (best epoch by val_accuracy, float32,
    no augmenter), history.json, training_curves.png, metrics.json and, last, run.json.
    With train.resume.enabled, every epoch is backed up under cfg.paths.train_backup (emotune.resume) and a
    killed run started again continues where it stopped; `code_files` (the stage's script) join the
    training code whose changes a resume must be allowed to cross.
    TensorFlow, MLflow and the data loader are imported here so the core above stays backend-neutral.
    """
    from emotune import datasets, tracking
    from emotune.model import build_model
    from emotune.resume import TrainingBackup, code_fingerprint, run_definition

    train_cfg = cfg.train
    if verbose == "auto":  # one line per epoch in logs (dvc repro > file), a live bar in a terminal
        verbose = 1 if sys.stdout.isatty() else 2
    # The strategy first: MultiWorkerMirroredStrategy must exist before any other TensorFlow op runs.
    strategy = distribution_strategy(str(train_cfg.strategy))
    seed = int(cfg.seed)
    keras.utils.set_random_seed(seed)
    chief = is_chief()
    # Non-chief workers of a cluster train too, but their files go to a folder deleted when they finish.
    scratch = None if chief else tempfile.TemporaryDirectory(prefix="emotune-worker-")
    out = Path(scratch.name) if scratch is not None else Path(out_dir or cfg.paths.train_out)

    data = training_data(cfg)
    x_train, y_train, x_val, y_val = data.x_train, data.y_train, data.x_val, data.y_val
    validation_info, report = data.validation, data.report

    backup = None
    resume_cfg = train_cfg.get("resume") or {}
    if resume_cfg.get("enabled", True) and str(train_cfg.strategy) != "default":
        # Every worker would have to restore the same state; a backup on one machine cannot promise that.
        print(f"train: no backups under train.strategy={train_cfg.strategy}: a stopped run starts again")
    elif resume_cfg.get("enabled", True):
        backup = TrainingBackup(
            cfg.paths.train_backup,
            run_definition(cfg, data.data_files),
            code_fingerprint(extra=code_files),
            epochs=int(train_cfg.epochs),
            allow_code_change=bool(resume_cfg.get("allow_code_change", False)),
        )
    first_epoch = backup.initial_epoch if backup is not None else 0

    batch_size = int(train_cfg.batch_size)
    train_data, steps = datasets.training_batches(
        x_train,
        data.targets,
        batch_size=batch_size,
        seed=seed,
        first_epoch=first_epoch,
    )
    val_data = datasets.make_dataset(x_val, y_val, batch_size=batch_size)
    image_size = int(cfg.data.image_size)

    def build() -> keras.Model:
        return build_model(cfg.model, image_size=image_size)

    with precision_policy(str(train_cfg.precision)) as precision, distribution_scope(strategy):
        model = build()
        several = str(train_cfg.strategy) == "multi_worker" and cluster_workers() > 1
        trainer_class = MultiWorkerTrainer if several else keras.Model
        trainer = training_model(model, train_cfg, steps, seed=seed, trainer_class=trainer_class)
    export_model = float32_twin(build)
    weights = class_weights(y_train, str(train_cfg.get("class_weights", "none")))
    print(
        f"train: {len(x_train)} rows, validation: {len(x_val)} rows ({validation_info['source']}), "
        f"{steps} steps/epoch, "
        f"precision {precision}, strategy {train_cfg.strategy}, "
        f"soft labels {train_cfg.get('soft_labels', 'none')}, "
        f"model {cfg.model.name} ({model.count_params():,} parameters)"
        + (" [SYNTHETIC DATA]" if cfg.data.synthetic else "")
    )
    restored = backup.restored if backup is not None else None
    if backup is not None:
        others = backup.other_backups()
        if others:
            print(f"train: not resuming backups of other configurations or data: {', '.join(others)}")
    if restored is not None:
        print(
            f"train: resuming from epoch {first_epoch + 1} of {train_cfg.epochs} "
            f"(backup of epoch {restored.epoch} in {backup.directory}, MLflow run {restored.run_id})"
        )
        if restored.code_changed:
            print(f"train: the training code changed since that backup: {', '.join(restored.code_changed)}")
    elif backup is not None:
        print(f"train: epoch 1 of {train_cfg.epochs}; backing up every epoch to {backup.directory}")

    run_id = restored.run_id if restored is not None else None
    if chief and run_id and not tracking.run_exists(cfg, run_id):
        print(f"train: MLflow run {run_id} is not in this tracking store: the epochs so far go to a new run")
        run_id = None
    run_ctx = tracking.start_run(cfg, run_id=run_id) if chief else contextlib.nullcontext()
    with run_ctx as run:
        callbacks: list[keras.callbacks.Callback] = []
        if chief:
            if run_id is None:
                tracking.log_run_start(cfg, report, len(x_train), validation_info)
            if restored is not None:
                tracking.record_resume(restored.resumes, first_epoch, restored.code_changed)
                tracking.log_missing_epochs(restored.history)
            callbacks.append(tracking.EpochLogger())
        if backup is not None:
            backup.run_id = run.info.run_id if chief else None
        result = fit(
            trainer,
            model,
            train_data,
            val_data,
            train_cfg,
            out / "model.keras",
            class_weight=weights,
            export_model=export_model,
            callbacks=callbacks,
            verbose=verbose,
            steps_per_epoch=steps,
            backup=backup,
        )
        metrics = run_metrics(result, precision, bool(cfg.data.synthetic), steps * batch_size)
        if restored is not None:
            metrics["resumes"] = restored.resumes
        write_run_outputs(out, result["history"], metrics)
        if scratch is not None:
            scratch.cleanup()
            if isinstance(trainer, MultiWorkerTrainer):
                trainer.wait_for_the_cluster()  # the chief is logging: leaving now would look like a crash
            return metrics
        # export_model holds the best epoch's weights
        run_info = tracking.log_run_end(cfg, run, out, metrics, export_model, validation_info)
    write_json(out / "run.json", run_info)  # last: its presence means the stage finished
    if isinstance(trainer, MultiWorkerTrainer):
        trainer.wait_for_the_cluster()
    if backup is not None:
        backup.remove()
    print(
        f"best val_accuracy {metrics['best_val_accuracy']:.4f} at epoch {metrics['best_epoch']}; {run_info}"
    )
    return {**metrics, **run_info}
