"""Averaging networks inside one model graph (`promote.ensemble_with_shipped`): the exported model returns the
mean of its members' probabilities, so every runtime and caller gets the ensemble from the one file, as with
the mirror-image average of emotune.tta. Each member costs one pass of a network per face, as the mirror image
does; promote.max_network_passes bounds the two together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras

from emotune.preprocess import to_model_input


def networks(model: keras.Model) -> list[keras.Model]:
    """The networks inside an exported model, looking through its wrappers (the inference graph, the
    mirror-image average, an ensemble): the nested models that hold no model themselves. A model with none
    nested is itself the one network."""
    nested = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if not nested:
        return [model]
    return [network for layer in nested for network in networks(layer)]


def averaged(models: Sequence[keras.Model]) -> keras.Model:
    """One model that returns the mean of the probabilities of `models` (same input and output shapes).

    Each member sits in its own wrapper, `member_<i>`: two members built from one recipe carry the same layer
    names, which a single graph refuses. Members are called with training=False (emotune.export explains
    why a model called without the flag may normalise with the batch's statistics).
    """
    if len(models) < 2:
        raise ValueError(f"an ensemble needs at least two models, got {len(models)}")
    shapes = {(tuple(m.input_shape[1:]), tuple(m.output_shape[1:])) for m in models}
    if len(shapes) != 1:
        raise ValueError(f"the models to average differ in input or output shape: {sorted(shapes)}")
    faces = keras.Input(shape=models[0].input_shape[1:], name="face")
    answers = []
    for i, model in enumerate(models):
        inner = keras.Input(shape=model.input_shape[1:], name=f"member_{i}_face")
        member = keras.Model(inner, model(inner, training=False), name=f"member_{i}")
        answers.append(member(faces, training=False))
    return keras.Model(faces, keras.layers.Average(name="ensemble_average")(answers), name="ensemble")


def accuracy(model: keras.Model, faces: Any, labels: Any, batch_size: int = 256) -> float:
    """Share of `faces` (uint8 (N, 48, 48)) whose most probable class under `model` is the label."""
    probabilities = model.predict(to_model_input(faces), batch_size=batch_size, verbose=0)
    return float((probabilities.argmax(1) == labels).mean())
