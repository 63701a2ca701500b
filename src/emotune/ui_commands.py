"""`emotune ui`: the page on its own (no BentoML), for trying it out or showing it on one laptop.

The same app the service mounts at /ui (emotune.ui.page_app), served by uvicorn at the root.
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Any


def _ui(args: argparse.Namespace) -> int:
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import uvicorn

    from emotune.serving import freeze_loaded_objects, serve_settings
    from emotune.ui import Engine, page_app

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    cfg = serve_settings(args.overrides)
    engine = Engine.from_config(cfg, args.model)  # load now: a missing model fails here, not on a frame
    host = args.host or str(cfg.ui.host)
    port = int(args.port or cfg.ui.port)
    print(f"emotune page: http://{host}:{port}/", flush=True)
    print(f"  model {engine.recognizer.source}; music {engine.music_status}", flush=True)
    app = page_app(cfg, engine=lambda: engine)
    freeze_loaded_objects()
    uvicorn.run(app, host=host, port=port, log_level="warning")
    return 0


def register(sub: Any) -> None:
    p = sub.add_parser(
        "ui",
        help="the webcam-and-playlist page on its own (http://127.0.0.1:7860/)",
        description="Serves the page that `bentoml serve` mounts at /ui, without the API. Binds 127.0.0.1 "
        "unless --host says otherwise. The model: --model, else $EMOTUNE_MODEL_DIR, else the BentoML store "
        "entry, else models/.",
    )
    p.add_argument("--host", default=None, help="address to bind (default: ui.host = 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="port (default: ui.port = 7860)")
    p.add_argument("--model", default=None, help="a model folder (emotune.onnx / model.keras) or model file")
    p.add_argument(
        "overrides", nargs="*", help="Hydra overrides, e.g. ui.face_rule=average music.library_dir=~/Music"
    )
    p.set_defaults(func=_ui)
