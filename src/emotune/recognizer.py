"""The inference core: find faces, preprocess them the one shared way, classify them all in one batch.

    from emotune.recognizer import EmotionRecognizer
    recognizer = EmotionRecognizer.load("models")          # models/emotune.onnx (or a .keras file)
    result = recognizer.analyze(rgb_frame)                   # faces with box, emotion, 7 probabilities
    probs = recognizer.classify(crops_uint8_n_48_48)         # float32 (N, 7)

Used by the BentoML service, the Gradio page, `emotune analyze` and evaluation. The ONNX path needs no
TensorFlow (fast start, small containers); a .keras file loads through Keras, which only the full environment
installs.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from emotune.atomic import sha256_file
from emotune.calibration import neutral_reference, recalibrate
from emotune.environment import FULL_ENV_COMMAND, FullEnvironmentRequired
from emotune.labels import EMOTIONS, NUM_CLASSES
from emotune.preprocess import FACE_SIZE, Box, crop_face, expand_box, to_gray, to_model_input
from emotune.vision import FaceDetector, as_rgb, detector_from_config, make_detector

ONNX_FILE = "emotune.onnx"
KERAS_FILE = "model.keras"
KERAS_SUFFIXES = (".keras", ".h5")
CARD_FILE = "model_card.json"
MODEL_DIR_ENV = "EMOTUNE_MODEL_DIR"


class Backend(Protocol):
    def predict(self, x: np.ndarray) -> np.ndarray:
        """float32 (N, 48, 48, 1) grey levels 0..255 -> float32 (N, 7) probabilities."""
        ...


class OnnxBackend:
    def __init__(self, path: Path | str, threads: int = 0) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        if threads:  # 0: onnxruntime uses every core
            options.intra_op_num_threads = int(threads)
        # Spinning workers burn the cores between calls that the face detector and the other request threads
        # need: a live page calls once per frame, so sleeping threads are faster overall (docs/serving.md,
        # "Scaling up").
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        spec = self.session.get_inputs()[0]
        if list(spec.shape[1:]) != [FACE_SIZE, FACE_SIZE, 1]:
            raise ValueError(f"{path}: expected input (N, {FACE_SIZE}, {FACE_SIZE}, 1), got {spec.shape}")
        self.input_name = spec.name

    def predict(self, x: np.ndarray) -> np.ndarray:
        # InferenceSession.run is thread-safe: one session serves every request thread.
        return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)


class KerasBackend:
    def __init__(self, path: Path | str) -> None:
        import keras

        import emotune.tta  # noqa: F401  (registers the layers of models exported with promote.flip_tta)

        self.model = keras.models.load_model(path, compile=False)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model(x, training=False), dtype=np.float32)


def load_backend(path: Path | str, threads: int = 0) -> Backend:
    path = Path(path)
    if path.suffix == ".onnx":
        return OnnxBackend(path, threads)
    if path.suffix in KERAS_SUFFIXES:
        return KerasBackend(path)
    raise ValueError(f"{path}: expected an .onnx or .keras model file")


class ModelLoadError(RuntimeError):
    """The model file is there but cannot be served: damaged, or not the file its model card describes."""


RESTORE_HINT = (
    "Fix: restore the file (`git checkout models/` or `dvc checkout`), re-run `dvc repro promote`, or serve "
    f"another model folder with --model / ${MODEL_DIR_ENV}"
)


def verify_model_file(path: Path, card: dict[str, Any] | None, card_path: Path) -> None:
    """Refuse a model file whose sha256 is not the one its model card records (files.<name>.sha256).

    A card that lists files but not this one describes another model, so that is refused too; a folder
    without a card (a hand-made model) is not checked.
    """
    files = (card or {}).get("files")
    if not files:
        return
    entry = files.get(path.name)
    if not isinstance(entry, dict) or "sha256" not in entry:
        raise ModelLoadError(
            f"{card_path} lists {', '.join(sorted(files))} but not {path.name}: it describes another model. "
            + RESTORE_HINT
        )
    actual = sha256_file(path)
    if actual != entry["sha256"]:
        raise ModelLoadError(
            f"{path}: sha256 {actual} differs from {entry['sha256']} recorded in {card_path}; the file was "
            "changed or damaged after it was promoted, so it is refused. " + RESTORE_HINT
        )


def check_model(model_dir: Path | str) -> tuple[Path, dict[str, Any] | None]:
    """(model file, model card or None) after the cheap checks that `EmotionRecognizer.load` makes first:
    the file exists, its card is valid JSON and the file's sha256 is the card's. Nothing is loaded."""
    path = model_file(model_dir)
    card_path = path.parent / CARD_FILE
    try:
        card = json.loads(card_path.read_text()) if card_path.is_file() else None
    except ValueError as err:
        raise ModelLoadError(f"{card_path} is not valid JSON ({err}). " + RESTORE_HINT) from err
    verify_model_file(path, card, card_path)
    if path.suffix in KERAS_SUFFIXES and importlib.util.find_spec("keras") is None:
        raise FullEnvironmentRequired(
            f"{path} is a Keras model: it needs the full environment ({FULL_ENV_COMMAND}); this install "
            f"serves ONNX models ({ONNX_FILE})"
        )
    return path, card


def model_file(model_dir: Path | str) -> Path:
    """The file to load from a model directory (ONNX first: it is the fast path) or the file itself."""
    path = Path(model_dir)
    if path.is_file():
        return path
    for name in (ONNX_FILE, KERAS_FILE):
        if (path / name).is_file():
            return path / name
    raise FileNotFoundError(
        f"no model in {path}: expected {ONNX_FILE} or {KERAS_FILE} (run `dvc repro promote`, or pass --model)"
    )


def bentoml_store_path(name: str) -> Path | None:
    """The folder of `name:latest` in the BentoML model store ($BENTOML_HOME), or None when absent."""
    import bentoml
    from bentoml.exceptions import NotFound

    try:
        return Path(bentoml.models.get(f"{name}:latest").path)
    except NotFound:
        return None


def locate_model(
    model: Path | str | None = None, model_dir: Path | str = "models", bentoml_model: str | None = None
) -> tuple[Path, str]:
    """Where the model to serve lives, and how it was found: an explicit path, $EMOTUNE_MODEL_DIR, the
    BentoML model store entry `bentoml_model` (what `bentoml build` packs) or the bundled `model_dir`."""
    if model:
        return Path(model), "argument"
    if os.environ.get(MODEL_DIR_ENV):
        return Path(os.environ[MODEL_DIR_ENV]), MODEL_DIR_ENV
    if bentoml_model:
        stored = bentoml_store_path(bentoml_model)
        if stored is not None:
            return stored, f"bentoml:{bentoml_model}"
    bundled = Path(model_dir)
    if not bundled.is_absolute() and not bundled.exists():
        # models/ of the checkout (or of a built bento), wherever the command runs from
        from emotune.config import REPO_ROOT

        bundled = REPO_ROOT / bundled
    return bundled, "bundled"


@dataclass
class Face:
    box: Box
    probabilities: np.ndarray  # (7,) in EMOTIONS order

    @property
    def emotion(self) -> str:
        return EMOTIONS[int(np.argmax(self.probabilities))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [int(v) for v in self.box],
            "emotion": self.emotion,
            "confidence": round(float(np.max(self.probabilities)), 6),
            "probabilities": _named(self.probabilities),
        }


@dataclass
class Analysis:
    faces: list[Face]
    width: int
    height: int
    calibrated: bool = False  # the faces' probabilities are read relative to a resting face

    def relative_to(self, resting: np.ndarray, neutral: np.ndarray) -> Analysis:
        """The same faces read relative to a resting face (emotune.calibration)."""
        faces = [Face(f.box, recalibrate(f.probabilities, resting, neutral)) for f in self.faces]
        return Analysis(faces, self.width, self.height, calibrated=True)

    @property
    def probabilities(self) -> np.ndarray | None:
        """The frame's mood: the mean of its faces' probabilities (None without faces)."""
        if not self.faces:
            return None
        return np.mean([f.probabilities for f in self.faces], axis=0)

    @property
    def dominant_emotion(self) -> str | None:
        probs = self.probabilities
        return None if probs is None else EMOTIONS[int(np.argmax(probs))]

    def to_dict(self) -> dict[str, Any]:
        probs = self.probabilities
        return {
            "faces": [f.to_dict() for f in self.faces],
            "num_faces": len(self.faces),
            "dominant_emotion": self.dominant_emotion,
            "probabilities": None if probs is None else _named(probs),
            "image": {"width": self.width, "height": self.height},
            **({"calibrated": True} if self.calibrated else {}),
        }


def _named(probs: np.ndarray) -> dict[str, float]:
    return {name: round(float(p), 6) for name, p in zip(EMOTIONS, probs, strict=True)}


def as_crops(crops: Any) -> np.ndarray:
    """Validate face crops for `classify`: (N, 48, 48) or (N, 48, 48, 1) grey levels -> uint8 (N, 48, 48).

    uint8 passes as is; other numeric types must hold finite values within 0..255 and are rounded to whole
    grey levels, so a crop reaches the model exactly as a FER2013 row does in training.
    """
    arr = np.asarray(crops)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2 and arr.shape == (FACE_SIZE, FACE_SIZE):
        arr = arr[None]
    if arr.ndim != 3 or arr.shape[1:] != (FACE_SIZE, FACE_SIZE):
        raise ValueError(
            f"face crops must have shape (N, {FACE_SIZE}, {FACE_SIZE}) or (N, {FACE_SIZE}, {FACE_SIZE}, 1), "
            f"got {arr.shape}"
        )
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == np.bool_ or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(
            f"face crops must be numeric grey levels (uint8 or float 0..255), got dtype {arr.dtype}"
        )
    if arr.size and (not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 255):
        raise ValueError("face crops must hold finite grey levels within 0..255")
    return np.rint(arr).astype(np.uint8)


class EmotionRecognizer:
    """A face detector + the emotion model. Thread-safe: one instance serves concurrent requests."""

    def __init__(
        self,
        backend: Backend,
        detector: FaceDetector,
        margin: float = 0.1,
        card: dict[str, Any] | None = None,
        source: str = "",
        max_faces: int | None = None,
    ) -> None:
        self.backend = backend
        self.detector = detector
        self.margin = float(margin)
        # The most faces one frame classifies (the largest): the model call grows with them, and a picture
        # of a crowd (or a pattern the detector reads as hundreds of faces) must not choose its cost.
        self.max_faces = None if max_faces is None else int(max_faces)
        if self.max_faces is not None and self.max_faces < 1:
            raise ValueError(f"max_faces={self.max_faces}: expected at least 1")
        self.card = card or {}
        self.source = source
        labels = self.card.get("labels")
        if labels is not None and tuple(labels) != EMOTIONS:
            raise ValueError(f"model card labels {labels} differ from {EMOTIONS}")
        self.neutral = neutral_reference(self.card)  # what a resting face is calibrated to

    @classmethod
    def load(
        cls,
        model_dir: Path | str = "models",
        *,
        detector: FaceDetector | str = "haar",
        margin: float = 0.1,
        threads: int = 0,
        max_faces: int | None = None,
        **detector_options: float,
    ) -> EmotionRecognizer:
        """Load `model_dir`/emotune.onnx (or model.keras, or the given model file) and its model card.

        `detector`: a FaceDetector, or a name for `make_detector` with `detector_options` (e.g.
        `min_face_size=60`, `downscale=0.7`; see HaarFaceDetector). Raises FileNotFoundError without a
        model, ModelLoadError for a damaged file or one whose sha256 differs from the card's."""
        if isinstance(detector, str):
            detector = make_detector(detector, **detector_options)
        elif detector_options:
            raise TypeError(f"detector options {sorted(detector_options)} given with a detector instance")
        path, card = check_model(model_dir)
        try:
            backend = load_backend(path, threads)
        except Exception as err:  # onnxruntime and Keras raise their own types for a damaged file
            raise ModelLoadError(f"cannot load the model {path}: {err}. " + RESTORE_HINT) from err
        return cls(
            backend,
            detector,
            margin=margin,
            card=card,
            source=str(path),
            max_faces=max_faces,
        )

    @classmethod
    def from_config(
        cls, serve_cfg: Any, model: Path | str | None = None, how: str | None = None
    ) -> EmotionRecognizer:
        """Built from the Hydra `serve` group (model: see `locate_model`; `how` labels an explicit one)."""
        path, found = locate_model(
            model, serve_cfg.get("model_dir", "models"), serve_cfg.get("bentoml_model")
        )
        how = how if model else found
        recognizer = cls.load(
            path,
            detector=detector_from_config(serve_cfg),
            margin=float(serve_cfg.get("face_margin", 0.1)),
            threads=int(serve_cfg.get("intra_op_threads", 0)),
            max_faces=serve_cfg.get("max_faces"),
        )
        recognizer.source = f"{recognizer.source} ({how})"
        return recognizer

    def classify(self, crops: Any) -> np.ndarray:
        """Face crops (N, 48, 48) grey levels -> float32 (N, 7) probabilities, in one model call."""
        faces = as_crops(crops)
        if len(faces) == 0:
            return np.zeros((0, NUM_CLASSES), dtype=np.float32)
        return self.backend.predict(to_model_input(faces))

    def crops(self, image: np.ndarray, boxes: list[Box]) -> np.ndarray:
        """uint8 (N, 48, 48): each box grown by the margin, cut from the grey frame, resized to 48x48."""
        gray = to_gray(image)
        height, width = gray.shape
        if not boxes:
            return np.zeros((0, FACE_SIZE, FACE_SIZE), dtype=np.uint8)
        return np.stack([crop_face(gray, expand_box(b, self.margin, width, height)) for b in boxes])

    def analyze(self, image: Any, boxes: list[Box] | None = None) -> Analysis:
        """Detect the faces in an RGB frame (or use the given boxes) and classify them all in one batch."""
        frame = as_rgb(image)
        if frame.ndim < 2 or frame.shape[0] == 0 or frame.shape[1] == 0:
            raise ValueError(f"empty image of shape {frame.shape}")
        boxes = self.detector.detect(frame) if boxes is None else [tuple(int(v) for v in b) for b in boxes]
        if self.max_faces is not None and len(boxes) > self.max_faces:
            largest = sorted(range(len(boxes)), key=lambda i: -boxes[i][2] * boxes[i][3])[: self.max_faces]
            boxes = [boxes[i] for i in sorted(largest)]
        probs = self.classify(self.crops(frame, boxes))
        faces = [Face(box, p) for box, p in zip(boxes, probs, strict=True)]
        return Analysis(faces, width=int(frame.shape[1]), height=int(frame.shape[0]))
