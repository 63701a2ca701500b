"""What the BentoML service, the page and `emotune analyze` share: the serve settings (conf/serve plus
EMOTUNE_* environment variables), the music recommender, the JSON of one analysis, and the server's last
step before it takes requests."""

from __future__ import annotations

import gc
import logging
import os
from collections.abc import Sequence
from typing import Any

from omegaconf import DictConfig

log = logging.getLogger(__name__)

# Environment variable -> serve setting: how a container or `emotune serve` changes them without conf/ edits.
ENV_SETTINGS: dict[str, tuple[str, type]] = {
    "EMOTUNE_HOST": ("host", str),
    "EMOTUNE_PORT": ("port", int),
    "EMOTUNE_WORKERS": ("workers", int),
    "EMOTUNE_THREADS": ("threads", int),
    "EMOTUNE_INTRA_OP_THREADS": ("intra_op_threads", int),
    "EMOTUNE_SSL_CERTFILE": ("ssl_certfile", str),
    "EMOTUNE_SSL_KEYFILE": ("ssl_keyfile", str),
}
# A folder of the listener's own audio files: music.library_dir (`emotune serve --music-dir` sets it). A
# variable of its own rather than a Hydra override, so any path works, spaces and all.
MUSIC_DIR_ENV = "EMOTUNE_MUSIC_DIR"
# What bounds one request's work and memory (docs/reliability.md, "Limits"). Each must be a positive whole
# number: the checks treat 0 or null as "no limit", which a server must not be started with by a typo.
LIMITS = (
    "serve.max_image_bytes",
    "serve.max_image_pixels",
    "serve.max_faces",
    "serve.max_batch_size",
    "music.max_k",
    "music.max_exclude",
    "ui.uploads.max_total_bytes",
    "ui.uploads.max_files",
    "ui.uploads.max_age_s",
)


def freeze_loaded_objects() -> None:
    """For a server, once everything is loaded: hide its ~300k objects (libraries, model, music) from the
    garbage collector. Each full collection walked all of them, a ~200 ms pause about every 30 s under load
    that every request in flight waited out (docs/benchmarks.md). Frozen objects are never freed, so what is
    already garbage is collected first."""
    gc.collect()
    gc.freeze()


def serve_settings(overrides: Sequence[str] = ()) -> DictConfig:
    """The composed configuration: conf/ + $EMOTUNE_OVERRIDES (space-separated Hydra overrides, e.g.
    "serve.max_image_bytes=2000000 music.k=5") + `overrides`, then the EMOTUNE_* variables on `serve` and
    $EMOTUNE_MUSIC_DIR on music.library_dir."""
    from emotune.config import compose

    cfg = compose([*os.environ.get("EMOTUNE_OVERRIDES", "").split(), *overrides])
    if os.environ.get(MUSIC_DIR_ENV):
        cfg.music.library_dir = os.environ[MUSIC_DIR_ENV]
    for env, (key, kind) in ENV_SETTINGS.items():
        if os.environ.get(env):
            try:
                cfg.serve[key] = kind(os.environ[env])
            except ValueError as err:
                raise ValueError(f"{env}={os.environ[env]!r}: expected {kind.__name__}") from err
    check_limits(cfg)
    return cfg


# The server's own settings, from conf/ or EMOTUNE_*: (lowest, highest) of each.
SERVER_RANGES = {
    "serve.port": (1, 65535),
    "serve.workers": (1, None),
    "serve.threads": (1, None),
    "serve.intra_op_threads": (0, None),
}


def check_limits(cfg: DictConfig) -> None:
    """Refuse a configuration whose request limits (LIMITS) are missing, zero, negative or not whole, or
    whose port, workers or threads are out of range, before any server starts."""
    from omegaconf import OmegaConf

    for key, (low, high) in {**dict.fromkeys(LIMITS, (1, None)), **SERVER_RANGES}.items():
        value = OmegaConf.select(cfg, key)
        within = isinstance(value, int) and not isinstance(value, bool) and value >= low
        if not within or (high is not None and value > high):
            span = f"{low} to {high}" if high is not None else f"at least {low}"
            raise ValueError(f"{key}={value!r}: expected a whole number, {span}")


def ssl_settings(serve: Any) -> dict[str, Any]:
    """The BentoML service's `ssl` configuration for serve.ssl_certfile + serve.ssl_keyfile (HTTPS), or {}
    (plain HTTP) when neither is set. One without the other, or a file that cannot be read, raises
    ValueError: the server must not quietly fall back to HTTP."""
    cert, key = serve.get("ssl_certfile"), serve.get("ssl_keyfile")
    if not cert and not key:
        return {}
    if not (cert and key):
        raise ValueError("HTTPS needs both serve.ssl_certfile and serve.ssl_keyfile: a certificate, its key")
    for what, path in (("certificate", cert), ("key", key)):
        if not os.access(path, os.R_OK):
            raise ValueError(f"cannot read the TLS {what} {path}")
    return {"ssl": {"enabled": True, "certfile": str(cert), "keyfile": str(key)}}


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
