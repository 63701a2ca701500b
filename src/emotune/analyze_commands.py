"""`emotune analyze` and `emotune serve`.

`emotune analyze` builds its answer with the service's own `analysis_json` (emotune.serving), so it prints
exactly what POST /analyze returns.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from emotune.serving import ENV_SETTINGS, analysis_json, load_recommender, serve_settings

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


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
