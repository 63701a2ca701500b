"""Kaggle downloads through kagglehub that fail within seconds, with a clear reason, offline or without
credentials: both are checked before kagglehub is imported (it alone takes seconds to import and retries for
long offline). Used by `emotune data download` (FER2013) and `emotune music download` (a track catalogue)."""

from __future__ import annotations

import math
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

KINDS = ("dataset", "competition")


class KaggleError(RuntimeError):
    """The download is impossible or failed; the message says why."""


def credentials() -> str | None:
    """Where kagglehub would find credentials (a description), or None. Mirrors kagglehub's own lookup."""
    if os.environ.get("KAGGLE_API_TOKEN"):
        return "KAGGLE_API_TOKEN"
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    folder = Path(os.environ.get("KAGGLE_CONFIG_DIR") or Path.home() / ".kaggle")
    for name in ("kaggle.json", "access_token", "access_token.txt"):
        if (folder / name).is_file():
            return str(folder / name)
    return None


def check_reachable(url: str, timeout: float) -> None:
    """Raise KaggleError unless a TCP connection to url's host opens within `timeout` seconds (DNS included:
    the lookup runs in a thread because getaddrinfo itself has no timeout)."""
    parsed = urlparse(url)
    host, port = parsed.hostname or url, parsed.port or (443 if parsed.scheme != "http" else 80)
    error: list[BaseException] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
        except OSError as exc:
            error.append(exc)

    thread = threading.Thread(target=connect, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise KaggleError(f"cannot reach {host}:{port} within {timeout:g} s (offline?)")
    if error:
        raise KaggleError(f"cannot reach {host}:{port} (offline?): {error[0]}")


def fetch(kind: str, handle: str, path: str | None = None, timeout: float = 3.0) -> Path:
    """kagglehub's download of a dataset (one file of it with `path`) or a competition: the local path."""
    if kind not in KINDS:
        raise ValueError(f"unknown Kaggle download kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not (math.isfinite(timeout) and timeout > 0):  # else the check says "offline" or raises
        raise KaggleError(f"the timeout must be a positive number of seconds, got {timeout:g}")
    if credentials() is None:
        raise KaggleError(
            "no Kaggle credentials: ~/.kaggle/kaggle.json (or $KAGGLE_CONFIG_DIR/kaggle.json), "
            "KAGGLE_USERNAME+KAGGLE_KEY or KAGGLE_API_TOKEN are not set"
        )
    check_reachable(os.environ.get("KAGGLE_API_ENDPOINT", "https://www.kaggle.com"), timeout)

    import kagglehub

    try:
        if kind == "competition":
            return Path(kagglehub.competition_download(handle, path=path))
        return Path(kagglehub.dataset_download(handle, path=path))
    except Exception as exc:  # kagglehub raises many types (HTTP, auth, rules not accepted)
        raise KaggleError(f"kagglehub could not download {kind} {handle}: {exc}") from exc
