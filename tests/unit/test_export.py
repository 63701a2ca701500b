"""The exported files compute what the trained model computes in inference, one face at a time or many.

The bundled recipe puts a central crop (keras.layers.CenterCrop) in front of batch-normalised convolutions.
Called without an explicit `training` flag, as `model.export()` calls it, Keras lets the crop's training
default reach the layers after it: batch normalisation then used each batch's own statistics, so a face's
answer depended on the faces beside it, and Dropout dropped. These tests hold every export to Keras' predict.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest

from emotune import export
from emotune.model import build_model
from emotune.preprocess import to_model_input
from emotune.recognizer import EmotionRecognizer
from emotune.tta import with_flip_average

PLAIN = {"name": "small_cnn", "width": 0.25, "dense_units": 16, "dropout": 0.5}
MODELS = {"plain": PLAIN, "crop": {**PLAIN, "channels": 1, "crop": 44}}


def faces(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 48, 48), dtype=np.uint8)


def model_for(kind: str) -> keras.Model:
    keras.utils.set_random_seed(0)
    return build_model(MODELS[kind], 48)


@pytest.mark.parametrize("kind", MODELS)
def test_every_export_answers_like_keras_predict_at_any_batch_size(kind, tmp_path):
    model = model_for(kind)
    x = faces(12)
    expected = model.predict(to_model_input(x), verbose=0)
    weights = [w.copy() for w in model.get_weights()]

    files = export.export_serving_files(model, tmp_path, "float32")

    for name in ("emotune.onnx", "model.keras"):
        recognizer = EmotionRecognizer.load(files[name])
        np.testing.assert_allclose(recognizer.classify(x), expected, atol=1e-5)
        alone = np.concatenate([recognizer.classify(x[i : i + 1]) for i in range(len(x))])
        np.testing.assert_allclose(alone, expected, atol=1e-5)
    # exporting does not move the model's batch-norm statistics
    for before, after in zip(weights, model.get_weights(), strict=True):
        np.testing.assert_array_equal(before, after)
    # the shipped Keras file answers in inference even to a bare call
    shipped = keras.saving.load_model(files["model.keras"])
    np.testing.assert_allclose(np.asarray(shipped(to_model_input(x[:1]))), expected[:1], atol=1e-5)


def test_the_flip_average_is_an_inference_graph():
    model = model_for("crop")
    x = faces(6, seed=1)
    mirrored = np.ascontiguousarray(x[:, :, ::-1])
    expected = sum(model.predict(to_model_input(f), verbose=0) for f in (x, mirrored)) / 2
    averaged = with_flip_average(model)
    np.testing.assert_allclose(np.asarray(averaged(to_model_input(x))), expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(averaged(to_model_input(x[:1]))), expected[:1], atol=1e-5)


def test_an_onnx_file_that_answers_otherwise_is_refused(tmp_path):
    model = model_for("crop")
    keras.utils.set_random_seed(1)
    other = build_model(MODELS["crop"], 48)
    onnx_file = export.export_onnx_float32(other, tmp_path / "other.onnx")
    with pytest.raises(RuntimeError, match="does not compute what the Keras model"):
        export.check_export_matches(model, onnx_file)
    export.check_export_matches(other, onnx_file)  # its own model passes
