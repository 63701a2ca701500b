"""Flip test-time augmentation inside the model graph (`promote.flip_tta`): the exported model averages each
face's probabilities with those of its mirror image. Every runtime (ONNX, Keras) and every caller (service,
page, `emotune evaluate`, benchmarks) then gets it from the model file itself, through the one preprocessing
path. It costs twice the classifier work for about one accuracy point on FER2013 (docs/model_history.md).
Importing this module registers the layers, which loading such a .keras file needs.
"""

from __future__ import annotations

from typing import Any

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="emotune")
class MirrorBatch(layers.Layer):
    """(N, H, W, C) -> (2N, H, W, C): the faces, then the same faces mirrored left to right. One batch of 2N
    rather than two calls of N: the network runs once, which is faster for the single faces of a webcam."""

    def call(self, faces: Any) -> Any:
        return keras.ops.concatenate([faces, keras.ops.flip(faces, axis=2)], axis=0)


@keras.saving.register_keras_serializable(package="emotune")
class MeanOfHalves(layers.Layer):
    """(2N, K) -> (N, K): the mean of the first and the second half of the batch (see MirrorBatch)."""

    def call(self, probabilities: Any) -> Any:
        n = keras.ops.shape(probabilities)[0] // 2
        return (probabilities[:n] + probabilities[n:]) / 2.0


def with_flip_average(model: keras.Model) -> keras.Model:
    """`model` wrapped so that it returns the mean of its probabilities for each face and its mirror image;
    same input and output as `model`."""
    faces = keras.Input(shape=model.input_shape[1:], name="face")
    answers = model(MirrorBatch(name="mirror")(faces), training=False)  # see emotune.export.inference_model
    probabilities = MeanOfHalves(name="flip_average")(answers)
    return keras.Model(faces, probabilities, name=f"{model.name}_flip_average")
