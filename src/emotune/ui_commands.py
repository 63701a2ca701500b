"""`emotune ui`: the page on its own (no BentoML), for trying it out or showing it on one laptop.

The same app the service mounts at /ui (emotune.ui.page_app), served by uvicorn at the root.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig


def ui_settings(args: argparse.Namespace) -> DictConfig:
    """The page's configuration: conf/ + $EMOTUNE_OVERRIDES + the overrides, with --music-dir (checked: a
    missing or unreadable folder raises CatalogError) as music.library_dir."""
    from emotune.music.library import library_folder
    from emotune.serving import serve_settings

    folder = library_folder(args.music_dir) if args.music_dir else None  # before the slow part
    cfg = serve_settings(args.overrides)
    if folder is not None:
        cfg.music.library_dir = str(folder)
    return cfg


def _ui(args: argparse.Namespace) -> int:
    from emotune.analyze_commands import config_errors, tls_files
    from emotune.music.catalog import CatalogError

    try:
        cfg = ui_settings(args)
        tls = tls_files(args, args.host or str(cfg.ui.host))
    except (CatalogError, ValueError, *config_errors()) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import uvicorn

    from emotune.serving import freeze_loaded_objects
    from emotune.ui import Engine, page_app

    try:
        engine = Engine.from_config(cfg, args.model)  # load now: a missing model fails here, not on a frame
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.music_dir and engine.music_status != "ok":  # asked for by name: fail rather than serve without
        print(f"error: music {engine.music_status}", file=sys.stderr)
        return 2
    host = args.host or str(cfg.ui.host)
    port = int(args.port or cfg.ui.port)
    print(f"emotune page: {'https' if tls else 'http'}://{host}:{port}/", flush=True)
    print(f"  model {engine.recognizer.source}; music {engine.music_status}", flush=True)
    if args.music_dir:
        from emotune.analyze_commands import library_summary

        summary = library_summary(cfg.music.library_dir, engine.recommender.library)
        print(f"  music folder {summary}", flush=True)
    app = page_app(cfg, engine=lambda: engine)
    freeze_loaded_objects()
    ssl = {"ssl_certfile": str(tls[0]), "ssl_keyfile": str(tls[1])} if tls else {}
    uvicorn.run(app, host=host, port=port, log_level="warning", **ssl)
    return 0


def register(sub: Any) -> None:
    from emotune.analyze_commands import add_tls_options
    from emotune.cli_types import PORT

    p = sub.add_parser(
        "ui",
        help="the webcam-and-playlist page on its own (http://127.0.0.1:7860/)",
        description="Serves the page that `bentoml serve` mounts at /ui, without the API. Binds 127.0.0.1 "
        "unless --host says otherwise. The model: --model, else $EMOTUNE_MODEL_DIR, else the BentoML store "
        "entry, else models/.",
    )
    p.add_argument("--host", default=None, help="address to bind (default: ui.host = 127.0.0.1)")
    p.add_argument("--port", type=PORT, default=None, help="port (default: ui.port = 7860)")
    p.add_argument("--model", default=None, help="a model folder (emotune.onnx / model.keras) or model file")
    p.add_argument(
        "--music-dir",
        default=None,
        metavar="PATH",
        help="a folder of your own audio files (mp3/ogg/flac/wav/m4a...) to play (music.library_dir)",
    )
    add_tls_options(p)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. ui.face_rule=average music.k=5")
    p.set_defaults(func=_ui)
