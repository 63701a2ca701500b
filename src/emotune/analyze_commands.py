"""`emotune analyze` and `emotune serve`.

`emotune analyze` builds its answer with the service's own `analysis_json` (emotune.serving), so it prints
exactly what POST /analyze returns.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from emotune.cli_types import PORT, POSITIVE
from emotune.serving import ENV_SETTINGS, MUSIC_DIR_ENV, analysis_json, load_recommender, serve_settings

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def config_errors() -> tuple[type[Exception], ...]:
    """What composing the configuration raises for a bad override (an unknown key, a wrong type)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    return HydraException, OmegaConfBaseException


def image_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if path.is_file():
        return [path]
    raise FileNotFoundError(f"{path}: no such file or folder")


def _analyze(args: argparse.Namespace) -> int:
    from emotune.recognizer import EmotionRecognizer
    from emotune.vision import ImageError, decode_image

    try:
        cfg = serve_settings(args.overrides)
        files = image_files(Path(args.path))
        recognizer = EmotionRecognizer.from_config(cfg.serve, args.model)
        recommender = None
        if not args.no_music:
            recommender, status = load_recommender(cfg)
            if recommender is None:
                print(f"music {status}; analysing without recommendations", file=sys.stderr)
            elif args.k is not None and args.k > recommender.max_k:  # else every face would fail on it
                raise ValueError(f"-k {args.k}: at most {recommender.max_k} tracks (music.max_k)")
    except (OSError, ValueError, *config_errors()) as err:  # missing path or model, bad override or -k
        print(f"emotune analyze: error: {err}", file=sys.stderr)
        return 2
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


def serve_command(args: argparse.Namespace, environ: Mapping[str, str]) -> tuple[list[str], dict[str, str]]:
    """The `bentoml serve` command line and its environment for `emotune serve`'s options: each option sets
    the variable of the serve setting of the same name (ENV_SETTINGS), --model $EMOTUNE_MODEL_DIR and
    --music-dir $EMOTUNE_MUSIC_DIR (an absolute path: bentoml runs from the repository root)."""
    from emotune.recognizer import MODEL_DIR_ENV

    env = dict(environ)
    variables = {setting: var for var, (setting, _) in ENV_SETTINGS.items()} | {"model": MODEL_DIR_ENV}
    for option, var in variables.items():
        if getattr(args, option, None) is not None:
            env[var] = str(getattr(args, option))
    if getattr(args, "music_dir", None):
        env[MUSIC_DIR_ENV] = str(Path(args.music_dir).expanduser().resolve())
    env.setdefault("BENTOML_DO_NOT_TRACK", "true")
    env.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    command = [sys.executable, "-m", "bentoml", "serve", "service:Emotune"]
    if args.development:
        command.append("--development")
    return command, env


def check_music(music_dir: str | Path, overrides: Sequence[str] = ()) -> Any:
    """Load the recommender with `music_dir` as music.library_dir, before any server starts: a missing or
    unreadable folder, or a broken sidecar, fails here with its message; the scan fills the tag cache that
    the server's workers then read. Prints what was found to stderr; returns the Recommender."""
    from emotune.music.library import library_folder
    from emotune.music.recommender import Recommender

    folder = library_folder(music_dir)
    cfg = serve_settings(overrides)
    cfg.music.library_dir = str(folder)
    recommender = Recommender.from_config(cfg)
    print(f"music: {library_summary(folder, recommender.library)}", file=sys.stderr, flush=True)
    return recommender


def library_summary(folder: str | Path, placed: Mapping[str, list[str]]) -> str:
    """'<folder>: 40 files placed (match 3, genre 37), 2 without a mood (<how to see them>)'."""
    counts = {how: len(paths) for how, paths in placed.items()}
    rules = ", ".join(f"{how} {n}" for how, n in counts.items() if how != "unplaced" and n)
    total = sum(n for how, n in counts.items() if how != "unplaced")
    unplaced = counts.get("unplaced", 0)
    validate = f"emotune music validate --music-dir {shlex.quote(str(folder))}"
    hint = f" ({validate} lists them and how to place them)" if unplaced else ""
    return f"{folder}: {total} files placed ({rules or 'none'}), {unplaced} without a mood{hint}"


def add_tls_options(parser: argparse.ArgumentParser) -> None:
    """--https | --ssl-certfile F --ssl-keyfile K, for `emotune serve` and `emotune ui`."""
    parser.add_argument(
        "--https",
        action="store_true",
        help="HTTPS with a self-signed certificate for this machine's names and addresses, made once under "
        "~/.config/emotune/tls/ (browsers ask to accept it once); for a camera on another device of the LAN",
    )
    parser.add_argument("--ssl-certfile", metavar="FILE", help="HTTPS: a PEM certificate (chain)")
    parser.add_argument("--ssl-keyfile", metavar="FILE", help="HTTPS: the certificate's PEM key")


def tls_files(args: argparse.Namespace, host: str | None) -> tuple[Path, Path] | None:
    """(certificate, key) as absolute paths for the TLS options, None for plain HTTP. --https makes (or
    reuses) the self-signed pair for `host` and this machine, and says so on stderr. Raises ValueError for
    options that do not go together or files that cannot be read."""
    cert, key = args.ssl_certfile, args.ssl_keyfile
    if args.https and (cert or key):
        raise ValueError("--https makes its own certificate: give it, or --ssl-certfile and --ssl-keyfile")
    if args.https:
        try:
            from emotune.tls import local_names, self_signed_certificate
        except ModuleNotFoundError as err:  # a hand-made install without it: the other way still works
            raise ValueError(
                f"--https needs the {err.name} package; or make a pair with `openssl req -x509 -newkey "
                "rsa:2048 -nodes -days 365 -subj /CN=emotune -keyout key.pem -out cert.pem` and pass "
                "--ssl-certfile cert.pem --ssl-keyfile key.pem"
            ) from None
        names = local_names(host)
        cert_path, key_path, made = self_signed_certificate(names)
        print(
            f"https: {'made' if made else 'reusing'} the self-signed certificate {cert_path} for "
            f"{', '.join(names)}; browsers ask once to accept it",
            file=sys.stderr,
            flush=True,
        )
        return cert_path, key_path
    if not (cert or key):
        return None
    if not (cert and key):
        raise ValueError("HTTPS needs both --ssl-certfile and --ssl-keyfile")
    paths = Path(cert).expanduser().resolve(), Path(key).expanduser().resolve()
    for path in paths:
        if not os.access(path, os.R_OK):
            raise ValueError(f"cannot read {path}")
    return paths


def _serve(args: argparse.Namespace) -> int:
    """`bentoml serve` of the repository's service, with the EMOTUNE_* settings from the options."""
    from emotune.config import REPO_ROOT
    from emotune.music.catalog import CatalogError

    try:
        tls = tls_files(args, args.host or os.environ.get("EMOTUNE_HOST"))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if tls is not None:
        args.ssl_certfile, args.ssl_keyfile = map(str, tls)  # -> EMOTUNE_SSL_CERTFILE, EMOTUNE_SSL_KEYFILE
    if args.music_dir:
        try:
            check_music(args.music_dir)
        except (CatalogError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
    command, env = serve_command(args, os.environ)
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
    p.add_argument("-k", type=POSITIVE, default=None, help="number of recommended tracks (default: music.k)")
    p.add_argument("--strategy", choices=("match", "uplift"), help="default: music.strategy")
    p.add_argument("--compact", action="store_true", help="one line of JSON")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. serve.min_face_size=60")
    p.set_defaults(func=_analyze)

    s = sub.add_parser(
        "serve",
        help="start the BentoML service (bentoml serve service:Emotune) on 127.0.0.1:3000",
        description="Binds 127.0.0.1 unless --host says otherwise (0.0.0.0 exposes it to the network).",
    )
    s.add_argument("--host", default=None, help="address to bind (default: serve.host = 127.0.0.1)")
    s.add_argument("--port", type=PORT, default=None, help="port (default: serve.port = 3000)")
    s.add_argument("--workers", type=POSITIVE, default=None, help="worker processes (default: serve.workers)")
    s.add_argument("--threads", type=POSITIVE, default=None, help="threads per worker (serve.threads)")
    s.add_argument("--model", default=None, help="serve this model folder instead of the store / models/")
    s.add_argument(
        "--music-dir",
        default=None,
        metavar="PATH",
        help="a folder of your own audio files (mp3/ogg/flac/wav/m4a...), played in the page "
        "(music.library_dir); checked and scanned before the server starts",
    )
    add_tls_options(s)
    s.add_argument("--development", action="store_true", help="BentoML development mode (one process)")
    s.set_defaults(func=_serve)
