"""The BentoML service: `bentoml serve` (bentofile.yaml -> service:Emotune, a shim for this module).

POST /analyze    multipart image upload (held in memory) -> faces, boxes, emotions, probabilities, mood, music
POST /classify   {"crops": N x 48 x 48 grey levels} -> N x 7 probabilities, adaptive batching across requests
POST /recommend  {"mood": "sad" | {emotion: p} | [7 probabilities], "k", "strategy", "exclude", "seed"}
GET  /health     model, detector and music status;  GET /model_card: the model card (JSON)
GET  /readyz /livez /metrics /docs (OpenAPI) come from BentoML.

Settings: conf/serve (+ EMOTUNE_* environment variables, see serving.ENV_SETTINGS). The model comes
from the BentoML store entry `serve.bentoml_model` when it exists (it is then packed by `bentoml build`),
else from models/. Bad input gets a 4xx JSON {"error": ...} and the server carries on.
"""

from __future__ import annotations

import logging
import os
from pathlib import PurePosixPath
from typing import Annotated, Any, Literal

import bentoml
import numpy as np
from fastapi import FastAPI
from pydantic import AfterValidator, Field, GetCoreSchemaHandler, GetJsonSchemaHandler, WithJsonSchema
from pydantic_core import core_schema
from starlette.datastructures import UploadFile
from starlette.formparsers import MultiPartParser
from starlette.responses import JSONResponse

from emotune.calibration import probability_vector
from emotune.http_guard import RequestGuard
from emotune.labels import EMOTIONS
from emotune.music import STRATEGIES
from emotune.recognizer import (
    MODEL_DIR_ENV,
    EmotionRecognizer,
    as_crops,
    bentoml_store_path,
    check_model,
    locate_model,
)
from emotune.serving import (
    analysis_json,
    freeze_loaded_objects,
    load_recommender,
    serve_settings,
    ssl_settings,
)
from emotune.ui import page_app
from emotune.vision import ImageError, decode_image

log = logging.getLogger(__name__)

CFG = serve_settings()
SERVE = CFG.serve
MAX_CROPS = int(SERVE.max_batch_size)
MAX_K, MAX_EXCLUDE = int(CFG.music.max_k), int(CFG.music.max_exclude)
MAX_ID_CHARS = 1024  # a track id: a Spotify id, or "local:" and a file's path in the music folder
INT64 = (-(2**63), 2**63 - 1)
# Multipart framing and a /classify JSON of MAX_CROPS crops fit well within this.
MAX_BODY_BYTES = int(SERVE.max_image_bytes) + 2_000_000
# Declared only when the store has the model: a BentoModel that is not there would be looked up in BentoCloud.
STORE_PATH = bentoml_store_path(str(SERVE.bentoml_model)) if SERVE.get("bentoml_model") else None
STORE_MODEL = bentoml.models.BentoModel(f"{SERVE.bentoml_model}:latest") if STORE_PATH is not None else None
# Starlette spools a form's file part over 1 MB to a temporary file; RequestGuard already holds the whole body
# (at most MAX_BODY_BYTES) in memory, so the part stays there too: uploads never touch the disk.
MultiPartParser.spool_max_size = MAX_BODY_BYTES


def checked_crops(value: Any) -> np.ndarray:
    crops = as_crops(value)
    if len(crops) > MAX_CROPS:
        raise ValueError(f"at most {MAX_CROPS} crops per request (serve.max_batch_size), got {len(crops)}")
    return crops


def bounded_int(name: str, low: int, high: int, setting: str) -> Any:
    """An optional whole number within low..high: the schema says so (what the fuzzing's boundary values come
    from) and a value outside is a 400 that names the setting."""

    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"{name} must be between {low} and {high} ({setting}), got {value}")
        return value

    schema = {"type": "integer", "minimum": low, "maximum": high}
    return Annotated[int, AfterValidator(check), WithJsonSchema(schema)] | None


Crops = Annotated[np.ndarray, AfterValidator(checked_crops)]
K = bounded_int("k", 1, MAX_K, "music.max_k")
Seed = bounded_int("seed", *INT64, "a 64-bit integer")
Strategy = Literal[STRATEGIES] | None
Probability = Annotated[float, Field(ge=0, allow_inf_nan=False)]
# An emotion name, {emotion: p} or 7 probabilities: never longer than that, whatever the body's size allows.
Mood = (
    Annotated[str, Field(max_length=32)]
    | Annotated[dict[Annotated[str, Field(max_length=32)], Probability], Field(max_length=len(EMOTIONS))]
    | Annotated[list[Probability], Field(max_length=len(EMOTIONS))]
)
TrackId = Annotated[str, Field(max_length=MAX_ID_CHARS)]
TrackIds = Annotated[list[TrackId], Field(max_length=MAX_EXCLUDE)] | None


class Upload(PurePosixPath):
    """A multipart file field held in memory: the client's file name (a pure path: nothing on disk) and the
    bytes it sent, `content`. BentoML takes a form field as a file only when its type is a path (or a PIL
    image), and it writes a `Path` parameter to a temporary file; a path class of our own is left to us."""

    content: bytes = b""

    @classmethod
    def from_form(cls, value: Any) -> Upload:
        if not isinstance(value, UploadFile):
            raise ValueError("expected a file upload")
        upload = cls(os.path.basename(value.filename or "") or "upload")
        upload.content = value.file.read()  # in memory: see MultiPartParser.spool_max_size above
        return upload

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        return core_schema.no_info_plain_validator_function(
            cls.from_form,
            serialization=core_schema.plain_serializer_function_ser_schema(lambda upload: upload.content),
        )

    @classmethod
    def __get_pydantic_json_schema__(
        cls, schema: core_schema.CoreSchema, handler: GetJsonSchemaHandler
    ) -> dict[str, Any]:
        # What BentoML's own file fields declare: "file" makes its OpenAPI spec a binary form field.
        return {"type": "file" if handler.mode == "validation" else "string", "format": "binary"}


def error(message: str, status: int = 400) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


# A model that cannot be served stops `bentoml serve` here, in the process that reads this module before it
# starts the workers: a worker failing in __init__ is restarted by BentoML forever and never gets ready.
check_model(
    STORE_PATH
    if STORE_PATH is not None and not os.environ.get(MODEL_DIR_ENV)
    else locate_model(None, SERVE.get("model_dir", "models"))[0]
)

info = FastAPI(title="emotune info")  # GET routes: BentoML's own APIs are POST


@bentoml.asgi_app(info, path="/")
@bentoml.asgi_app(page_app(CFG), path="/ui")  # the page (emotune.ui): webcam -> mood -> playlist
@bentoml.service(
    name="emotune",
    workers=int(SERVE.workers),
    threads=int(SERVE.threads),
    http={"host": str(SERVE.host), "port": int(SERVE.port)},
    traffic={"timeout": 60},
    **ssl_settings(SERVE),  # HTTPS when serve.ssl_certfile and serve.ssl_keyfile are set
)
class Emotune:
    if STORE_MODEL is not None:
        model_ref = STORE_MODEL  # a class attribute is what `bentoml build` packs

    def __init__(self) -> None:
        model, how = None, None
        if STORE_MODEL is not None and not os.environ.get(MODEL_DIR_ENV):
            # The version this service (or bento) was built with, not whatever is newest in the store.
            model, how = self.model_ref.path, f"bentoml:{self.model_ref.tag}"
        self.recognizer = EmotionRecognizer.from_config(SERVE, model, how)
        self.recommender, self.music_status = load_recommender(CFG)
        log.info("emotune: model %s; music %s", self.recognizer.source, self.music_status)
        freeze_loaded_objects()

    @bentoml.api
    def analyze(
        self,
        image: Annotated[Upload, Field(description="the picture, as a multipart file (JPEG, PNG, ...)")],
        k: K = None,
        strategy: Strategy = None,
        resting: Annotated[
            str | None,
            Field(
                max_length=400,
                description="optional: the probabilities of this person's resting face, 7 comma-separated "
                "numbers in label order (the mean of a few seconds of a relaxed face, e.g. from earlier "
                "answers); the faces are then read relative to it (calibrated: true in the answer)",
            ),
        ] = None,
    ) -> dict[str, Any]:
        """Faces in the image with their box (x, y, w, h), emotion and 7 probabilities; the dominant emotion
        (argmax of the faces' mean probabilities) and music for it. No face: 200 with zero faces."""
        try:
            rest = probability_vector(resting) if resting else None
        except ValueError as err:
            return error(str(err), 400)
        try:
            rgb = decode_image(image.content, int(SERVE.max_image_bytes), int(SERVE.max_image_pixels))
        except ImageError as err:
            return error(str(err), err.status)
        try:
            analysis = self.recognizer.analyze(rgb)
            if rest is not None:
                analysis = analysis.relative_to(rest, self.recognizer.neutral)
            return analysis_json(analysis, self.recommender, k, strategy)
        except ValueError as err:  # e.g. an unknown music strategy or k < 1
            return error(str(err), 400)

    @bentoml.api(
        batchable=bool(SERVE.get("adaptive_batching", True)),
        max_batch_size=MAX_CROPS,
        max_latency_ms=int(SERVE.max_latency_ms),
    )
    def classify(self, crops: Crops) -> np.ndarray:
        """48x48 face crops (N, 48, 48), grey levels 0..255 (uint8 or float) -> (N, 7) probabilities in the
        model card's label order. Concurrent requests are batched into one model call."""
        return self.recognizer.classify(crops)

    @bentoml.api
    def recommend(
        self,
        mood: Mood,
        k: K = None,
        strategy: Strategy = None,
        exclude: TrackIds = None,
        seed: Seed = None,
    ) -> dict[str, Any]:
        """Tracks for a mood: an emotion name, {emotion: probability} or 7 probabilities."""
        if self.recommender is None:
            return error(f"music is {self.music_status}", 503)
        try:
            tracks = self.recommender.recommend(
                mood, strategy=strategy, k=k, exclude=exclude or (), seed=seed
            )
        except ValueError as err:
            return error(str(err), 400)
        return {"recommendations": [t.to_dict() for t in tracks]}

    @info.get("/health")
    def health(self) -> dict[str, Any]:
        card = self.recognizer.card
        return {
            "status": "ok",
            "model": self.recognizer.source,
            "run_id": card.get("mlflow", {}).get("run_id"),
            "detector": str(SERVE.detector),
            "music": self.music_status,
        }

    @info.get("/model_card")
    def model_card(self) -> dict[str, Any]:
        return {"source": self.recognizer.source, **self.recognizer.card}


# Body limit (413 early, chunked bodies too), unparseable forms and text-valued files (400), JSON 404/405.
Emotune.add_asgi_middleware(RequestGuard, limit=MAX_BODY_BYTES, file_fields={"/analyze": ("image",)})
