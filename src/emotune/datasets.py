"""tf.data input for training and evaluation, built from the prepared uint8 arrays.

Faces go through `emotune.preprocess.to_model_input` once, in NumPy, so the tensors the model trains on are
exactly the ones serving feeds it. After that everything runs inside tf.data (cache, seeded shuffle, batch,
prefetch): no Python per batch. Augmentation is not here but in the model (`training.training_model`), so it
runs in-graph on every Keras backend.

Training batches come from `training_batches`: epoch e's order depends on (seed, e) alone, so a run resumed
at epoch e (emotune.resume) sees exactly the batches an uninterrupted run would have.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from emotune.labels import NUM_CLASSES
from emotune.preprocess import to_model_input


def one_hot(labels: np.ndarray, num_classes: int = NUM_CLASSES) -> np.ndarray:
    """Integer labels (N,) -> float32 one-hot targets (N, num_classes)."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"expected labels of shape (N,), got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0..{num_classes - 1}, got {labels.min()}..{labels.max()}")
    return np.eye(num_classes, dtype=np.float32)[labels.astype(np.int64)]


def make_dataset(
    faces: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    batch_size: int,
    targets: np.ndarray | None = None,
) -> tf.data.Dataset:
    """uint8 faces (N, S, S) and labels (N,) -> batches of (float32 (B, S, S, 1), float32 one-hot (B, 7)), in
    order and every row once: for validation and prediction (training draws `training_batches`).

    `targets` (N, 7) replaces the one-hot labels when given (soft labels). Without labels or targets the
    dataset yields the faces alone (prediction).
    """
    x = to_model_input(faces)
    if targets is None and labels is not None:
        targets = one_hot(labels)
    if targets is not None and len(targets) != len(x):
        raise ValueError(f"{len(x)} faces but {len(targets)} labels")
    ds = tf.data.Dataset.from_tensor_slices(x if targets is None else (x, np.asarray(targets, np.float32)))
    return ds.cache().batch(int(batch_size)).prefetch(tf.data.AUTOTUNE)


def training_batches(
    faces: np.ndarray,
    targets: np.ndarray,
    *,
    batch_size: int,
    seed: int,
    first_epoch: int = 0,
) -> tuple[tf.data.Dataset, int]:
    """Endless training batches from epoch `first_epoch` on, and the number of batches per epoch.

    Each epoch is a fresh permutation of all rows drawn from (seed, epoch) alone, cut into full batches (the
    last partial one is dropped: one static batch shape, one traced graph). Pass the step count to
    `fit(steps_per_epoch=...)` so each of fit's epochs is exactly one of these.
    """
    x = to_model_input(faces)
    targets = np.asarray(targets, np.float32)
    if targets.ndim != 2 or len(targets) != len(x):
        raise ValueError(f"{len(x)} faces need targets of shape ({len(x)}, classes), got {targets.shape}")
    if not len(x):
        raise ValueError("no training faces")
    batch = min(int(batch_size), len(x))
    steps = len(x) // batch
    x_all, t_all = tf.constant(x), tf.constant(targets)
    seed_value = tf.constant(int(seed), tf.int64)

    def epoch_rows(epoch: tf.Tensor) -> tf.data.Dataset:
        order = tf.random.experimental.stateless_shuffle(
            tf.range(len(x), dtype=tf.int64), seed=tf.stack([seed_value, epoch])
        )
        return tf.data.Dataset.from_tensor_slices(order[: steps * batch]).batch(batch, drop_remainder=True)

    ds = (
        tf.data.Dataset.range(int(first_epoch), np.iinfo(np.int64).max)
        .flat_map(epoch_rows)
        .map(
            lambda rows: (tf.gather(x_all, rows), tf.gather(t_all, rows)), num_parallel_calls=tf.data.AUTOTUNE
        )
    )
    return ds.prefetch(tf.data.AUTOTUNE), steps
