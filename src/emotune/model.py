"""Model builders. Every model takes raw grey levels and does its own scaling, so training and serving
feed it the same tensors: float32 of shape (N, S, S, 1) with values 0..255 (see `emotune.vision`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import keras
from keras import layers

from emotune.labels import NUM_CLASSES

# VGG19's five blocks: (convolutions, filters) each, a 2x2 max-pool after every block.
VGG19_BLOCKS: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (4, 256), (4, 512), (4, 512))
SMALL_CNN_BLOCKS: tuple[tuple[int, int], ...] = ((2, 64), (2, 128), (2, 256))


class WeightsUnavailableError(RuntimeError):
    """ImageNet weights could not be fetched (offline) and are not in the Keras cache."""


def scaled_blocks(name: str, width: float) -> tuple[tuple[int, int], ...]:
    """(convolutions, filters) per block of a network trained from scratch: its family's layout at `width`."""
    families = {"vgg19": VGG19_BLOCKS, "small_cnn": SMALL_CNN_BLOCKS}
    if name not in families:
        raise ValueError(f"model.name={name!r}: expected vgg19 or small_cnn")
    return tuple((convs, max(8, round(filters * width))) for convs, filters in families[name])


def _conv_blocks(
    x: Any, blocks: tuple[tuple[int, int], ...], batch_norm: bool, bn_momentum: float = 0.99
) -> Any:
    for b, (convs, filters) in enumerate(blocks, start=1):
        for c in range(1, convs + 1):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm, name=f"block{b}_conv{c}")(
                x
            )
            if batch_norm:
                x = layers.BatchNormalization(momentum=bn_momentum, name=f"block{b}_bn{c}")(x)
            x = layers.Activation("relu", name=f"block{b}_relu{c}")(x)
        x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
    return x


def _keras_vgg19(x: Any, weights: str, input_size: int) -> Any:
    """The stock Keras VGG19 (needed to load ImageNet or a local weights file)."""
    if weights != "imagenet" and not Path(weights).is_file():
        raise FileNotFoundError(
            f"model.weights={weights!r}: no such weights file (use imagenet, none or a path)"
        )
    try:
        backbone = keras.applications.VGG19(
            include_top=False, weights=weights, input_shape=(input_size, input_size, 3)
        )
    except Exception as err:  # Keras raises a bare Exception wrapping URLError when offline
        if weights == "imagenet":
            raise WeightsUnavailableError(
                "model.weights=imagenet needs the Keras VGG19 no-top file, which could not be downloaded "
                f"({err.__class__.__name__}: {err}). Put vgg19_weights_tf_dim_ordering_tf_kernels_notop.h5 "
                "in ~/.keras/models/ (or $KERAS_HOME/models/), pass model.weights=/path/to/it.h5, or train "
                "from scratch with model.weights=none."
            ) from err
        raise
    return backbone(x)


def build_model(
    model_cfg: Mapping[str, Any], image_size: int = 48, num_classes: int = NUM_CLASSES
) -> keras.Model:
    """Build the classifier described by the Hydra `model` config."""
    name = model_cfg["name"]
    input_size = int(model_cfg.get("input_size", image_size))
    weights = str(model_cfg.get("weights", "none"))
    width = float(model_cfg.get("width", 1.0))
    batch_norm = bool(model_cfg.get("batch_norm", False))
    # Short runs need faster-moving BN statistics or the saved model predicts from stale ones.
    bn_momentum = float(model_cfg.get("bn_momentum", 0.99))

    crop = model_cfg.get("crop")
    inputs = keras.Input(shape=(image_size, image_size, 1), name="face")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)
    if input_size != image_size:
        x = layers.Resizing(input_size, input_size, interpolation="bilinear", name="resize")(x)
    if crop:
        # The network sees the central crop x crop window; training shifts the face under it (translate),
        # so it learns on random crops, and every later step costs (crop / input_size)^2 of the full face.
        if not 0 < int(crop) <= input_size:
            raise ValueError(f"model.crop={crop!r}: expected null or 1..{input_size}")
        x = layers.CenterCrop(int(crop), int(crop), name="crop")(x)
    if weights != "none" or int(model_cfg.get("channels", 3)) == 3:
        # Grayscale fed as three identical channels, as ImageNet backbones expect; a network trained from
        # scratch can take the one channel (model.channels=1) and save two thirds of its first convolution.
        x = layers.Concatenate(name="gray_to_rgb")([x, x, x])

    if name == "vgg19":
        if weights != "none":
            if batch_norm or width != 1.0:
                raise ValueError("pretrained VGG19 weights need model.batch_norm=false and model.width=1.0")
            x = _keras_vgg19(x, weights, input_size)
        else:
            x = _conv_blocks(x, scaled_blocks(name, width), batch_norm, bn_momentum)
    else:  # small_cnn always normalises its batches
        x = _conv_blocks(x, scaled_blocks(name, width), True, bn_momentum)

    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(
        int(model_cfg.get("dense_units", 4096)),
        activation="relu",
        kernel_regularizer=keras.regularizers.l2(float(model_cfg.get("l2", 0.0))),
        name="fc",
    )(x)
    if float(model_cfg.get("dropout", 0.0)) > 0:
        x = layers.Dropout(float(model_cfg["dropout"]), name="dropout")(x)
    # float32 softmax even under mixed precision: bfloat16 probabilities are too coarse.
    outputs = layers.Dense(num_classes, activation="softmax", dtype="float32", name="emotion")(x)
    return keras.Model(inputs, outputs, name=f"emotune_{name}")
