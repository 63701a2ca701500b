"""The BentoML service, for real: `bentoml build` of this checkout (the promoted model in a BentoML store of
this module), the built bento served by `bentoml serve` on a free port, real HTTP requests: faces, batches,
every kind of bad input, concurrency. (Serving from source, `bentoml serve service:Emotune`, is what
`bentoml build` imports too, and the UI and reliability tests run it.)"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from helpers.serving import encode, fer_like_face, paste, photo_rgb, tiny_model_dir

from benchmarks.served import bentoml_serve, serve_env
from emotune.calibration import recalibrate
from emotune.config import REPO_ROOT
from emotune.labels import EMOTIONS
from emotune.recognizer import EmotionRecognizer

pytestmark = pytest.mark.slow

MAX_BYTES, MAX_PIXELS, MAX_CROPS = 1_000_000, 4_000_000, 16
LIMITS = (
    f"serve.max_image_bytes={MAX_BYTES} serve.max_image_pixels={MAX_PIXELS} serve.max_batch_size={MAX_CROPS}"
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return tiny_model_dir(tmp_path_factory)


@pytest.fixture(scope="module")
def bento(model_dir, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """`bentoml build` of this checkout into a BentoML home of this module only, whose store holds the tiny
    model imported by the promote stage's own function: (the built bento's folder, the environment)."""
    home = tmp_path_factory.mktemp("bentoml")
    env = serve_env(home)
    code = (
        "import json, sys; from emotune.promotion import import_to_bentoml;"
        "print(import_to_bentoml(sys.argv[1], 'emotune-fer', json.load(open(sys.argv[2]))))"
    )
    card = model_dir / "model_card.json"
    subprocess.run(
        [sys.executable, "-c", code, str(model_dir), str(card)], env=env, check=True, cwd=REPO_ROOT
    )
    build = subprocess.run(
        [sys.executable, "-m", "bentoml", "build"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (built,) = [p for p in (home / "bentos" / "emotune").iterdir() if p.is_dir()]
    return built, env


@pytest.fixture(scope="module")
def server(bento, tmp_path_factory) -> Iterator[str]:
    """The built bento, served (`bentoml serve emotune:latest`) with small limits for the bad-input tests."""
    _, env = bento
    env = {**env, "EMOTUNE_OVERRIDES": LIMITS, "EMOTUNE_THREADS": "4"}
    with bentoml_serve("emotune:latest", env, tmp_path_factory.mktemp("serve") / "server.log") as served:
        yield served.url


@pytest.fixture(scope="module")
def client(server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server, timeout=30) as c:
        yield c


def upload(client: httpx.Client, data: bytes, name: str = "image.png", **params) -> httpx.Response:
    return client.post("/analyze", files={"image": (name, data, "application/octet-stream")}, data=params)


def test_analyze_a_face_pasted_into_a_frame(client, model_dir):
    frame, box = paste(fer_like_face(), scale=3)
    response = upload(client, encode(frame))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["num_faces"] == 1 and result["image"] == {"width": 640, "height": 480}
    (face,) = result["faces"]
    x, y, w, h = face["box"]
    assert abs(x - box[0]) < 25 and abs(y - box[1]) < 25 and abs(w - box[2]) < 40 and abs(h - box[3]) < 40
    assert result["dominant_emotion"] == face["emotion"]
    # The service answers exactly what the Python API computes for the same pixels.
    local = EmotionRecognizer.load(model_dir).analyze(frame).to_dict()
    assert face["probabilities"] == pytest.approx(local["faces"][0]["probabilities"], abs=1e-5)
    assert isinstance(result.get("recommendations"), list) and result["recommendations"]


def test_analyze_reads_faces_relative_to_a_resting_face_when_given_one(client, model_dir):
    """/analyze with `resting`: the same face, read through emotune.calibration against the model's neutral
    reference; the resting reading itself then reads neutral."""
    frame, _ = paste(fer_like_face(), scale=3)
    plain = upload(client, encode(frame)).json()
    raw = np.array([plain["faces"][0]["probabilities"][e] for e in EMOTIONS])
    at_rest = upload(client, encode(frame), resting=",".join(f"{p:.6f}" for p in raw))
    assert at_rest.status_code == 200, at_rest.text
    result = at_rest.json()
    assert result["calibrated"] is True and "calibrated" not in plain
    recognizer = EmotionRecognizer.load(model_dir)
    calibrated = np.array([result["faces"][0]["probabilities"][e] for e in EMOTIONS])
    np.testing.assert_allclose(calibrated, recalibrate(raw, raw, recognizer.neutral), atol=1e-4)
    assert result["dominant_emotion"] == "neutral" and result["faces"][0]["emotion"] == "neutral"
    for bad, message in (("0.5,0.5", "expected 7"), ("1,1,1,1,1,1,nan", "finite"), ("0,0,0,0,0,0,0", "zero")):
        response = upload(client, encode(frame), resting=bad)
        assert response.status_code == 400 and message in response.json()["error"], response.text
    too_long = upload(client, encode(frame), resting="1," * 300)
    assert too_long.status_code in (400, 422)


def test_a_huge_k_is_refused_at_once_on_every_endpoint(client):
    """k=1e9 once made /analyze grow until the kernel killed the worker; now every entry point refuses it
    with a 400 in well under a second, and the server carries on."""
    frame, _ = paste(fer_like_face(), scale=3)
    for response in (
        upload(client, encode(frame), k="1000000000"),
        client.post("/recommend", json={"mood": "happy", "k": 1_000_000_000}),
    ):
        assert response.status_code == 400 and "music.max_k" in response.json()["error"], response.text
        assert response.elapsed.total_seconds() < 5
    assert len(upload(client, encode(frame), k="3").json()["recommendations"]) == 3


def test_analyze_a_jpeg_photo_and_a_picture_without_face(client):
    photo = upload(client, encode(photo_rgb(), "JPEG", quality=90), "photo.jpg")
    assert photo.status_code == 200 and photo.json()["num_faces"] == 1
    empty = upload(client, encode(np.full((300, 400, 3), 30, np.uint8)))
    assert empty.status_code == 200
    assert empty.json()["faces"] == [] and empty.json()["dominant_emotion"] is None
    assert empty.json().get("recommendations") == []


def test_classify_a_batch_of_crops(client, model_dir):
    rng = np.random.default_rng(0)
    crops = np.stack([fer_like_face(), *rng.integers(0, 256, (4, 48, 48), dtype=np.uint8)])
    response = client.post("/classify", json={"crops": crops.tolist()})
    assert response.status_code == 200, response.text
    probs = np.asarray(response.json())
    assert probs.shape == (5, 7)
    np.testing.assert_allclose(probs, EmotionRecognizer.load(model_dir).classify(crops), atol=1e-5)
    floats = client.post("/classify", json={"crops": (crops[:1] / 1.0).tolist()})
    assert floats.status_code == 200 and np.allclose(floats.json(), probs[:1], atol=1e-5)


def _noise_png(side: int) -> bytes:
    return encode(np.random.default_rng(1).integers(0, 256, (side, side, 3), dtype=np.uint8))


BAD_UPLOADS = {
    "not an image": (b"hello, I am text", 415, "not an image"),
    "empty body": (b"", 400, "empty"),
    "corrupt bytes": (encode(photo_rgb(), "JPEG")[:5000], 400, "corrupt"),
    "too many bytes": (_noise_png(700), 413, "limit"),  # ~1.5 MB > 1 MB
    "too many pixels": (encode(np.zeros((2000, 2500), np.uint8)), 413, "pixels"),  # 5 Mpx > 4 Mpx
    "body over the request limit": (b"\0" * (MAX_BYTES + 2_500_000), 413, "limit"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_a_4xx_json_error_and_the_server_carries_on(client, case):
    data, status, message = BAD_UPLOADS[case]
    response = upload(client, data)
    assert response.status_code == status, response.text
    assert message in response.json()["error"]
    assert client.get("/readyz").status_code == 200


BAD_JSON = {
    "no image field": ("/analyze", {}),
    "wrong crop shape": ("/classify", {"crops": np.zeros((2, 32, 32), int).tolist()}),
    "ragged crops": ("/classify", {"crops": [[1, 2], [3]]}),
    "text crops": ("/classify", {"crops": [[["a"] * 48] * 48]}),
    "out of range": ("/classify", {"crops": np.full((1, 48, 48), 999).tolist()}),
    "too many crops": ("/classify", {"crops": np.zeros((MAX_CROPS + 1, 48, 48), int).tolist()}),
    "unknown mood": ("/recommend", {"mood": "bored"}),
}


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_bad_json_requests_get_a_400_json_error(client, case):
    route, body = BAD_JSON[case]
    response = client.post(route, json=body)
    assert response.status_code == 400, response.text
    assert "error" in response.json()
    assert client.get("/readyz").status_code == 200


def test_concurrent_requests(client):
    frame = encode(paste(fer_like_face(), scale=3)[0])
    crops = np.random.default_rng(2).integers(0, 256, (20, 3, 48, 48), dtype=np.uint8)

    def analyze(_: int) -> dict:
        return upload(client, frame).raise_for_status().json()

    def classify(i: int) -> np.ndarray:
        return np.asarray(
            client.post("/classify", json={"crops": crops[i].tolist()}).raise_for_status().json()
        )

    with ThreadPoolExecutor(20) as pool:
        faces = list(pool.map(analyze, range(20)))
        batched = list(pool.map(classify, range(20)))
    assert all(r["faces"] and r["faces"][0] == faces[0]["faces"][0] for r in faces)
    # Requests batched together still get their own rows back.
    alone = np.asarray(client.post("/classify", json={"crops": crops[7].tolist()}).json())
    assert all(b.shape == (3, 7) for b in batched)
    np.testing.assert_allclose(batched[7], alone, atol=1e-5)


def test_health_model_card_recommend_and_openapi(client):
    health = client.get("/health").json()
    assert health["status"] == "ok" and "bentoml:emotune-fer" in health["model"]  # the packed model
    card = client.get("/model_card").json()
    assert card["labels"][:2] == ["angry", "disgust"] and card["input"]["shape"] == [None, 48, 48, 1]
    tracks = client.post("/recommend", json={"mood": "sad", "k": 3}).json()["recommendations"]
    assert len(tracks) == 3
    paths = client.get("/docs.json").json()["paths"]
    assert {"/analyze", "/classify", "/recommend"} <= set(paths)


def test_the_bento_packs_the_store_model_code_and_configuration(bento):
    built, _ = bento
    info = yaml.safe_load((built / "bento.yaml").read_text())
    # The bento references the store model (containerize and export carry it along) ...
    assert [m["tag"].split(":")[0] for m in info["services"][0]["models"]] == ["emotune-fer"]
    # ... binds localhost unless told otherwise, and carries the code, conf/ and the shim it imports.
    assert info["services"][0]["config"]["http"]["host"] == "127.0.0.1"
    for path in (
        "service.py",
        "src/emotune/service.py",
        "src/emotune/recognizer.py",
        "conf/serve/default.yaml",
    ):
        assert (built / "src" / path).is_file(), path

    # Its image installs the light set of `make serve` at uv.lock's versions: no TensorFlow, DVC or MLflow.
    def pins(text: str) -> set[str]:
        return {line.split(";")[0].strip() for line in text.splitlines() if line and not line.startswith("#")}

    packed = pins((built / "env" / "python" / "requirements.txt").read_text())
    light = pins((REPO_ROOT / "requirements-serve.txt").read_text())
    # (BentoML adds a pin of itself, the version that built the bento.)
    assert light <= packed and all(p.startswith("bentoml==") for p in packed - light), sorted(packed ^ light)
    assert not any(p.startswith(("tensorflow", "keras", "mlflow", "dvc")) for p in packed)
