"""Backend-neutral training core: augmentation, optimiser, loss and the fit loop.

Only Keras and NumPy here, so the same code trains under TensorFlow on a CPU and under JAX/PyTorch on a GPU
machine without TensorFlow. The DVC stage (pipelines/train.py) adds the tf.data input, MLflow and checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import keras
import numpy as np
from keras import layers

from emotune.labels import NUM_CLASSES


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


def make_optimizer(train_cfg: Mapping[str, Any], steps_per_epoch: int) -> keras.optimizers.Optimizer:
    lr = learning_rate(train_cfg, steps_per_epoch)
    name = train_cfg.get("optimizer", "adam")
    if name == "adam":
        return keras.optimizers.Adam(lr)
    if name == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=float(train_cfg.get("weight_decay", 1e-4)))
    if name == "sgd":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True)
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


def training_model(
    model: keras.Model, train_cfg: Mapping[str, Any], steps_per_epoch: int, seed: int | None = None
) -> keras.Model:
    """`model` behind the augmenter, compiled: what `fit` trains. `model` itself stays augmentation-free."""
    augmenter = make_augmenter(train_cfg.get("augment", {}), seed=seed)
    inputs = keras.Input(shape=model.input_shape[1:], name="face")
    trainer = keras.Model(inputs, model(augmenter(inputs)), name="trainer")
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
