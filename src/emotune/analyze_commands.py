"""`emotune analyze` and `emotune serve`, and what they share with the BentoML service.

The service (emotune.service) and `emotune analyze` build their answer with the same `analysis_json`, so the
command prints exactly what POST /analyze returns.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
# Environment variable -> serve setting: how a container or `emotune serve` changes them without conf/ edits.
ENV_SETTINGS: dict[str, tuple[str, type]] = {
    "EMOTUNE_HOST": ("host", str),
    "EMOTUNE_PORT": ("port", int),
    "EMOTUNE_WORKERS": ("workers", int),
    "EMOTUNE_THREADS": ("threads", int),
    "EMOTUNE_INTRA_OP_THREADS": ("intra_op_threads", int),
}


def freeze_loaded_objects() -> None:
    """For a server, once everything is loaded: hide its ~300k objects (libraries, model, music) from the
    garbage collector. Each full collection walked all of them, a ~200 ms pause about every 30 s under load
    that every request in flight waited out (README "Benchmarks"). Frozen objects are never freed, so what is
    already garbage is collected first."""
    gc.collect()
    gc.freeze()


def serve_settings(overrides: Sequence[str] = ()) -> DictConfig:
    """The composed configuration: conf/ + $EMOTUNE_OVERRIDES (space-separated Hydra overrides, e.g.
    "serve.max_image_bytes=2000000 music.k=5") + `overrides`, then the EMOTUNE_* variables on `serve`."""
    from emotune.config import compose

    cfg = compose([*os.environ.get("EMOTUNE_OVERRIDES", "").split(), *overrides])
    for env, (key, kind) in ENV_SETTINGS.items():
        if os.environ.get(env):
            try:
                cfg.serve[key] = kind(os.environ[env])
            except ValueError as err:
                raise ValueError(f"{env}={os.environ[env]!r}: expected {kind.__name__}") from err
    return cfg


def load_recommender(cfg: DictConfig) -> tuple[Any | None, str]:
    """(Recommender, "ok") from cfg.music, or (None, why not): the emotion service works without music."""
    try:
        from emotune.music import Recommender
    except ImportError as err:
        return None, f"unavailable: {err}"
    try:
        return Recommender.from_config(cfg), "ok"
    except Exception as err:  # a broken catalogue must not take face analysis down with it
        log.exception("music recommender failed to load")
        return None, f"error: {err}"


def analysis_json(
    analysis: Any, recommender: Any | None = None, k: int | None = None, strategy: str | None = None
) -> dict[str, Any]:
    """The answer of POST /analyze and `emotune analyze`: faces, the dominant emotion and, when music is
    available, recommendations for the frame's mood (an empty list when there is no face)."""
    out = analysis.to_dict()
    if recommender is not None:
        probs = analysis.probabilities
        tracks = [] if probs is None else recommender.recommend(probs, strategy=strategy, k=k)
        out["recommendations"] = [t.to_dict() for t in tracks]
    return out


def image_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"{path}: no such file or folder")


def _analyze(args: argparse.Namespace) -> int:
    from emotune.recognizer import EmotionRecognizer
    from emotune.vision import ImageError, decode_image

    cfg = serve_settings(args.overrides)
    files = image_files(Path(args.path))
    recognizer = EmotionRecognizer.from_config(cfg.serve, args.model)
    recommender = None
    if not args.no_music:
        recommender, status = load_recommender(cfg)
        if recommender is None:
            print(f"music {status}; analysing without recommendations", file=sys.stderr)
    results, failed = [], 0
    for file in files:
        try:
            rgb = decode_image(file.read_bytes(), cfg.serve.max_image_bytes, cfg.serve.max_image_pixels)
            result = analysis_json(recognizer.analyze(rgb), recommender, args.k, args.strategy)
        except (ImageError, OSError) as err:
            failed += 1
            result = {"error": str(err)}
        results.append({"file": str(file), **result})
    if Path(args.path).is_file():
        out: Any = {k: v for k, v in results[0].items() if k != "file"}
    else:
        out = results
    print(json.dumps(out, indent=None if args.compact else 2))
    return 1 if failed else 0


def _serve(args: argparse.Namespace) -> int:
    """`bentoml serve` of the repository's service, with the EMOTUNE_* settings from the options."""
    from emotune.config import REPO_ROOT
    from emotune.recognizer import MODEL_DIR_ENV

    env = dict(os.environ)
    # Each option sets the variable of the serve setting of the same name (ENV_SETTINGS).
    variables = {setting: var for var, (setting, _) in ENV_SETTINGS.items()} | {"model": MODEL_DIR_ENV}
    for option, var in variables.items():
        if getattr(args, option, None) is not None:
            env[var] = str(getattr(args, option))
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    command = [sys.executable, "-m", "bentoml", "serve", "service:Emotune"]
    if args.development:
        command.append("--development")
    os.chdir(REPO_ROOT)
    os.execvpe(command[0], command, env)  # replaces this process: Ctrl+C goes straight to BentoML
    return 0  # pragma: no cover


def register(sub: Any) -> None:
    p = sub.add_parser(
        "analyze",
        help="detect faces and their emotions in an image or a folder of images (prints JSON)",
        description="Prints the same JSON as the service's POST /analyze (a list with a `file` key per "
        "image for a folder). The model: --model, else $EMOTUNE_MODEL_DIR, else the BentoML store entry, "
        "else models/.",
    )
    p.add_argument("path", help="an image file or a folder (searched recursively)")
    p.add_argument("--model", help="a model folder (emotune.onnx / model.keras) or model file")
    p.add_argument("--no-music", action="store_true", help="skip the music recommendations")
    p.add_argument("-k", type=int, default=None, help="number of recommended tracks (default: music.k)")
    p.add_argument("--strategy", default=None, help="match | uplift (default: music.strategy)")
    p.add_argument("--compact", action="store_true", help="one line of JSON")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. serve.min_face_size=60")
    p.set_defaults(func=_analyze)

    s = sub.add_parser(
        "serve",
        help="start the BentoML service (bentoml serve service:Emotune) on 127.0.0.1:3000",
        description="Binds 127.0.0.1 unless --host says otherwise (0.0.0.0 exposes it to the network).",
    )
    s.add_argument("--host", default=None, help="address to bind (default: serve.host = 127.0.0.1)")
    s.add_argument("--port", type=int, default=None, help="port (default: serve.port = 3000)")
    s.add_argument("--workers", type=int, default=None, help="worker processes (default: serve.workers)")
    s.add_argument("--threads", type=int, default=None, help="request threads per worker (serve.threads)")
    s.add_argument("--model", default=None, help="serve this model folder instead of the store / models/")
    s.add_argument("--development", action="store_true", help="BentoML development mode (one process)")
    s.set_defaults(func=_serve)
