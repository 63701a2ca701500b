"""EmotionRecognizer: the one preprocessing path, batched classification, the scripting API and the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from helpers.serving import GRACE_FACE_BOX, encode, fer_like_face, paste, photo_rgb, tiny_model_dir

from emotune.labels import EMOTIONS
from emotune.recognizer import EmotionRecognizer, as_crops, locate_model
from emotune.vision import HaarFaceDetector


class Recording:
    """Wraps a backend and keeps every tensor it is asked to classify."""

    def __init__(self, backend) -> None:
        self.backend, self.calls = backend, []

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.calls.append(x.copy())
        return self.backend.predict(x)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def recognizer(model_dir) -> EmotionRecognizer:
    return EmotionRecognizer.load(model_dir)


def test_training_and_serving_feed_the_model_identical_tensors(tmp_path, recognizer):
    """The same face through the training input (FER2013 CSV -> prepare -> tf.data) and through serving
    (a 48x48 crop, and a frame with the face pasted at a known box) reaches the model as the same tensor."""
    from emotune.data import load_prepared, prepare
    from emotune.data.synthetic import generate, to_csv_text
    from emotune.datasets import make_dataset

    face = fer_like_face()
    x, y, usage = generate(21, seed=1)
    first_train = int(np.flatnonzero(usage == 0)[0])
    x[first_train] = face
    raw = tmp_path / "faces_synthetic.csv"
    raw.write_text(to_csv_text(x, y, usage))
    prepare(raw, tmp_path / "prepared", synthetic=True, progress=False)
    x_train, y_train = load_prepared(tmp_path / "prepared")["train"]
    batch = next(iter(make_dataset(x_train, y_train, batch_size=len(x_train))))[0].numpy()
    training = batch[:1]  # the first Training row of the CSV is the face
    assert training.shape == (1, 48, 48, 1) and training.dtype == np.float32

    spy = Recording(recognizer.backend)
    serving = EmotionRecognizer(spy, recognizer.detector, margin=0.0)
    serving.classify(face[None])  # a FER-format crop
    serving.analyze(np.stack([face] * 3, axis=-1), boxes=[(0, 0, 48, 48)])  # the crop as an RGB image
    frame, box = paste(face, scale=3)
    serving.analyze(frame, boxes=[box])  # a frame with the face at a known box
    assert len(spy.calls) == 3
    for tensor in spy.calls:
        np.testing.assert_array_equal(tensor, training)


def test_classify_batches_every_face_of_a_frame_in_one_call(recognizer):
    face = fer_like_face()
    frame = np.full((480, 900, 3), 128, np.uint8)
    frame[50:194, 40:184] = np.kron(face, np.ones((3, 3), np.uint8))[..., None]
    frame[200:440, 500:740] = np.kron(face, np.ones((5, 5), np.uint8))[..., None]
    spy = Recording(recognizer.backend)
    result = EmotionRecognizer(spy, recognizer.detector, margin=0.1).analyze(frame)
    assert len(result.faces) == 2
    assert len(spy.calls) == 1 and spy.calls[0].shape == (2, 48, 48, 1)


def test_analyze_returns_boxes_emotions_and_probabilities(recognizer):
    result = recognizer.analyze(photo_rgb()).to_dict()
    assert result["num_faces"] == 1 and result["image"] == {"width": 512, "height": 600}
    face = result["faces"][0]
    x, y, w, h = face["box"]
    assert abs(x - GRACE_FACE_BOX[0]) < 20 and abs(y - GRACE_FACE_BOX[1]) < 20
    assert abs(w - GRACE_FACE_BOX[2]) < 30 and abs(h - GRACE_FACE_BOX[3]) < 30
    assert list(face["probabilities"]) == list(EMOTIONS)
    assert sum(face["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert face["emotion"] == max(face["probabilities"], key=face["probabilities"].get)
    assert result["dominant_emotion"] == face["emotion"]
    json.dumps(result)  # JSON-ready as it is


def test_analyze_accepts_pil_images_bytes_and_paths(recognizer, tmp_path):
    from PIL import Image

    rgb = photo_rgb()
    reference = recognizer.analyze(rgb).to_dict()
    path = tmp_path / "photo.png"
    path.write_bytes(encode(rgb))
    for source in (Image.fromarray(rgb), encode(rgb), path, str(path)):
        assert recognizer.analyze(source).to_dict() == reference


def test_no_face_means_zero_faces_and_no_dominant_emotion(recognizer):
    result = recognizer.analyze(np.full((240, 320, 3), 90, np.uint8)).to_dict()
    assert result["faces"] == [] and result["num_faces"] == 0
    assert result["dominant_emotion"] is None and result["probabilities"] is None


def test_classify_shapes_and_dtypes(recognizer):
    face = fer_like_face()
    probs = recognizer.classify(np.stack([face, face[::-1]]))
    assert probs.shape == (2, 7) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # float grey levels and a trailing channel axis are the same crops
    np.testing.assert_array_equal(recognizer.classify(face[None, ..., None].astype(np.float64)), probs[:1])
    assert recognizer.classify(np.zeros((0, 48, 48), np.uint8)).shape == (0, 7)


@pytest.mark.parametrize(
    ("crops", "message"),
    [
        (np.zeros((2, 32, 32), np.uint8), "shape"),
        (np.zeros((2, 48, 48, 3), np.uint8), "shape"),
        (np.zeros((48,), np.uint8), "shape"),
        (np.full((1, 48, 48), 300.0), "0..255"),
        (np.full((1, 48, 48), np.nan), "0..255"),
        (np.full((1, 48, 48), -1), "0..255"),
        (np.full((1, 48, 48), "a"), "numeric"),
        (np.ones((1, 48, 48), bool), "numeric"),
    ],
)
def test_bad_crops_are_refused_clearly(crops, message):
    with pytest.raises(ValueError, match=message):
        as_crops(crops)


def test_keras_and_float16_onnx_models_agree(model_dir):
    onnx = EmotionRecognizer.load(model_dir)
    keras = EmotionRecognizer.load(model_dir / "model.keras")
    crops = np.stack([fer_like_face(), fer_like_face()[:, ::-1], np.full((48, 48), 128, np.uint8)])
    np.testing.assert_allclose(onnx.classify(crops), keras.classify(crops), atol=2e-3)


def test_model_card_labels_must_match(model_dir, tmp_path):
    for name in ("emotune.onnx", "model_card.json"):
        (tmp_path / name).write_bytes((model_dir / name).read_bytes())
    card = json.loads((tmp_path / "model_card.json").read_text())
    card["labels"] = list(reversed(card["labels"]))
    (tmp_path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="labels"):
        EmotionRecognizer.load(tmp_path)


def test_detector_settings_come_from_the_serve_config(model_dir):
    from emotune.config import compose

    def settings(detector):
        return detector.min_face_size, detector.downscale, detector.scale_factor, detector.min_neighbors

    overrides = [
        "serve.min_face_size=60",
        "serve.detector_downscale=0.9",
        "serve.detector_scale_factor=1.2",
        "serve.detector_min_neighbors=6",
    ]
    cfg = compose([f"serve.model_dir={model_dir}", *overrides])
    assert settings(EmotionRecognizer.from_config(cfg.serve).detector) == (60, 0.9, 1.2, 6)
    # conf/serve and the library's own defaults (a user scripting with HaarFaceDetector()) are the same.
    default = EmotionRecognizer.from_config(compose([f"serve.model_dir={model_dir}"]).serve).detector
    assert settings(default) == settings(HaarFaceDetector()) == (50, 0.65, 1.15, 3)


def test_load_takes_a_detector_or_its_settings(model_dir):
    custom = HaarFaceDetector(min_face_size=80)
    assert EmotionRecognizer.load(model_dir, detector=custom).detector is custom
    named = EmotionRecognizer.load(model_dir, min_face_size=60, downscale=0.7).detector
    defaults = HaarFaceDetector()
    assert (named.min_face_size, named.downscale, named.scale_factor) == (60, 0.7, defaults.scale_factor)
    with pytest.raises(TypeError, match="min_face_size"):
        EmotionRecognizer.load(model_dir, detector=custom, min_face_size=60)


def test_missing_model_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="promote"):
        EmotionRecognizer.load(tmp_path)


def test_locate_model_precedence(monkeypatch, tmp_path):
    from emotune.config import REPO_ROOT

    monkeypatch.delenv("EMOTUNE_MODEL_DIR", raising=False)
    monkeypatch.chdir(tmp_path)  # no models/ here: the checkout's is meant
    assert locate_model(None, "models", None) == (REPO_ROOT / "models", "bundled")
    (tmp_path / "models").mkdir()
    assert locate_model(None, "models", None) == (Path("models"), "bundled")
    monkeypatch.setenv("EMOTUNE_MODEL_DIR", str(tmp_path))
    assert locate_model(None, "models", None) == (tmp_path, "EMOTUNE_MODEL_DIR")
    assert locate_model("x.onnx", "models", None) == (Path("x.onnx"), "argument")


def test_cli_analyze_prints_the_endpoint_json(model_dir, tmp_path, capsys):
    from emotune.cli import main
    from emotune.serving import analysis_json, load_recommender, serve_settings

    folder = tmp_path / "pictures"
    folder.mkdir()
    (folder / "photo.png").write_bytes(encode(photo_rgb()))
    (folder / "blank.jpg").write_bytes(encode(np.full((100, 100, 3), 50, np.uint8), "JPEG"))
    assert main(["analyze", str(folder / "photo.png"), "--model", str(model_dir), "--compact"]) == 0
    single = json.loads(capsys.readouterr().out)

    recommender, _ = load_recommender(serve_settings())
    expected = analysis_json(EmotionRecognizer.load(model_dir).analyze(photo_rgb()), recommender)
    assert single == json.loads(json.dumps(expected))
    assert single["num_faces"] == 1

    assert main(["analyze", str(folder), "--model", str(model_dir), "--no-music"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert [Path(r["file"]).name for r in listing] == ["blank.jpg", "photo.png"]
    assert [r["num_faces"] for r in listing] == [0, 1]
    assert "recommendations" not in listing[1]

    (folder / "broken.png").write_bytes(b"not a png")
    assert main(["analyze", str(folder), "--model", str(model_dir), "--no-music"]) == 1
    listing = json.loads(capsys.readouterr().out)
    assert "not an image" in next(r for r in listing if r["file"].endswith("broken.png"))["error"]


def test_cli_serve_starts_bentoml_with_the_options_as_settings(monkeypatch):
    """`emotune serve` hands over to `bentoml serve service:Emotune` (the real server is tested in
    test_service.py); here only what it hands over: the command, the repository root and the settings."""
    import os

    from emotune.cli import main
    from emotune.config import REPO_ROOT

    calls = []
    monkeypatch.setattr(os, "execvpe", lambda file, args, env: calls.append((file, args, env, os.getcwd())))
    monkeypatch.chdir("/")
    main(["serve", "--host", "0.0.0.0", "--port", "8081", "--workers", "3", "--model", "/some/models"])
    ((_, args, env, cwd),) = calls
    assert args[1:] == ["-m", "bentoml", "serve", "service:Emotune"]
    assert cwd == str(REPO_ROOT)
    assert env["EMOTUNE_HOST"] == "0.0.0.0" and env["EMOTUNE_PORT"] == "8081"
    assert env["EMOTUNE_WORKERS"] == "3" and env["EMOTUNE_MODEL_DIR"] == "/some/models"
    assert "EMOTUNE_THREADS" not in env or env["EMOTUNE_THREADS"] == os.environ.get("EMOTUNE_THREADS")


def test_env_settings_override_conf(monkeypatch):
    from emotune.serving import serve_settings

    monkeypatch.setenv("EMOTUNE_THREADS", "5")
    monkeypatch.setenv("EMOTUNE_OVERRIDES", "serve.min_face_size=77 music.k=3")
    cfg = serve_settings()
    assert cfg.serve.threads == 5 and cfg.serve.min_face_size == 77 and cfg.music.k == 3
    assert cfg.serve.host == "127.0.0.1"  # localhost unless told otherwise
    monkeypatch.setenv("EMOTUNE_PORT", "eighty")
    with pytest.raises(ValueError, match="EMOTUNE_PORT"):
        serve_settings()


def test_at_most_max_faces_are_classified_the_largest(model_dir):
    """serve.max_faces: a picture the detector reads as many faces classifies only the largest ones."""
    crowd = EmotionRecognizer.load(model_dir, max_faces=2)
    boxes = [(0, 0, 60, 60), (100, 0, 90, 90), (200, 0, 70, 70), (300, 0, 120, 120)]
    faces = crowd.analyze(photo_rgb(), boxes=boxes).faces
    assert [f.box for f in faces] == [(100, 0, 90, 90), (300, 0, 120, 120)]  # in the detector's order
    assert len(EmotionRecognizer.load(model_dir).analyze(photo_rgb(), boxes=boxes).faces) == 4
    with pytest.raises(ValueError, match="max_faces=0"):
        EmotionRecognizer.load(model_dir, max_faces=0)


@pytest.mark.parametrize("limit", ["serve.max_image_bytes=0", "serve.max_faces=-1", "music.max_k=null"])
def test_a_server_is_not_configured_without_its_limits(limit):
    """0 or null would read as "no limit" to the checks: serve_settings refuses them, naming the key."""
    from emotune.serving import serve_settings

    with pytest.raises(ValueError, match=re.escape(limit.split("=")[0])):
        serve_settings([limit])


@pytest.mark.parametrize(
    ("env", "value", "key"),
    [
        ("EMOTUNE_PORT", "70000", "serve.port"),
        ("EMOTUNE_PORT", "0", "serve.port"),
        ("EMOTUNE_WORKERS", "0", "serve.workers"),
        ("EMOTUNE_THREADS", "-2", "serve.threads"),
        ("EMOTUNE_INTRA_OP_THREADS", "-1", "serve.intra_op_threads"),
    ],
)
def test_a_server_is_not_configured_with_an_impossible_port_or_worker_count(monkeypatch, env, value, key):
    """The EMOTUNE_* variables (and conf/) are range-checked before a server starts, naming the key."""
    from emotune.serving import serve_settings

    monkeypatch.setenv(env, value)
    with pytest.raises(ValueError, match=re.escape(f"{key}={value}")):
        serve_settings()
    monkeypatch.delenv(env)
    assert serve_settings().serve.port == 3000  # the defaults pass
