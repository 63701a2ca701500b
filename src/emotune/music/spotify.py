"""Optional: refresh a playlist file from a Spotify playlist (spotipy, client-credentials flow).

Credentials come only from the environment: SPOTIPY_CLIENT_ID and SPOTIPY_CLIENT_SECRET (an app from
https://developer.spotify.com/dashboard). Only the playlist endpoints are used: Spotify removed
audio-features and recommendations for new apps (Nov 2024), so features come from the offline catalogue.
Every failure (no credentials, offline, rejected credentials, unknown or private playlist) is a
`SpotifyError` with a message saying what to do; nothing is written unless the whole playlist was read.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from emotune.music.catalog import (
    DEFAULT_PLAYLISTS_DIR,
    canonical_emotion,
    load_playlist_file,
    write_csv_atomic,
)

ENV_ID, ENV_SECRET = "SPOTIPY_CLIENT_ID", "SPOTIPY_CLIENT_SECRET"
_PLAYLIST_REF = re.compile(
    r"(?:spotify:playlist:|open\.spotify\.com/(?:intl-[a-z-]+/)?(?:embed/)?playlist/)([0-9A-Za-z]{22})"
)
_TIMEOUT_S = 10


class SpotifyError(RuntimeError):
    """Spotify could not be used; the message says why and what to do."""


def playlist_id(ref: str) -> str:
    """A playlist URL, `spotify:playlist:ID` URI or bare id -> the id."""
    text = ref.strip()
    match = re.fullmatch(r"([0-9A-Za-z]{22})", text) or _PLAYLIST_REF.search(text)
    if not match:
        raise SpotifyError(
            f"{ref!r} is not a Spotify playlist URL, URI or id (open.spotify.com/playlist/...)"
        )
    return match.group(1)


def client() -> Any:
    """A spotipy client from the environment's credentials; no retries, short timeouts (fail fast offline)."""
    if not (os.environ.get(ENV_ID) and os.environ.get(ENV_SECRET)):
        raise SpotifyError(
            f"Spotify credentials missing: set {ENV_ID} and {ENV_SECRET} (create an app at "
            "https://developer.spotify.com/dashboard). The built-in playlists work without Spotify."
        )
    import spotipy
    from spotipy.cache_handler import MemoryCacheHandler
    from spotipy.oauth2 import SpotifyClientCredentials

    # The token stays in memory: no .cache file with a token left in the working directory.
    auth = SpotifyClientCredentials(requests_timeout=_TIMEOUT_S, cache_handler=MemoryCacheHandler())
    return spotipy.Spotify(auth_manager=auth, requests_timeout=_TIMEOUT_S, retries=0, status_retries=0)


def items_to_rows(items: Iterable[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Spotify playlist items -> rows (Name, Album, Artist, spotify_id); episodes and local files skipped."""
    rows = []
    for item in items:
        track = item.get("track") or item.get("item")  # the API renamed "track" to "item" in 2025
        if not track or track.get("type", "track") != "track" or track.get("is_local") or not track.get("id"):
            continue
        artists = ", ".join(a.get("name", "") for a in track.get("artists") or [] if a.get("name"))
        rows.append(
            {
                "Name": track.get("name", ""),
                "Album": (track.get("album") or {}).get("name", ""),
                "Artist": artists,
                "spotify_id": track["id"],
            }
        )
    return rows


def fetch_playlist(ref: str, sp: Any = None) -> list[dict[str, str]]:
    """All tracks of a playlist (following pagination)."""
    import requests
    import spotipy

    pid = playlist_id(ref)
    sp = sp or client()
    try:
        page = sp.playlist_items(pid, additional_types=("track",))
        items = list(page["items"])
        while page.get("next"):
            page = sp.next(page)
            items.extend(page["items"])
    except requests.exceptions.RequestException as exc:
        raise SpotifyError(f"cannot reach Spotify (offline?): {type(exc).__name__}") from None
    except spotipy.oauth2.SpotifyOauthError as exc:
        raise SpotifyError(f"Spotify rejected the credentials in {ENV_ID}/{ENV_SECRET}: {exc}") from None
    except spotipy.SpotifyException as exc:
        if exc.http_status == 404:
            raise SpotifyError(
                f"playlist {pid} not found: it must be public (Spotify's own editorial playlists are not "
                "available to new apps since Nov 2024)"
            ) from None
        raise SpotifyError(f"Spotify error {exc.http_status}: {exc.msg}") from None
    return items_to_rows(items)


def write_playlist(rows: list[dict[str, str]], emotion: str, directory: Path | str | None = None) -> Path:
    """Write `<emotion>.csv` atomically (and read it back through the normal validation)."""
    emotion = canonical_emotion(emotion)
    if not rows:
        raise SpotifyError("the playlist has no tracks; nothing written")
    path = Path(directory or DEFAULT_PLAYLISTS_DIR) / f"{emotion}.csv"
    frame = pd.DataFrame(rows, columns=["Name", "Album", "Artist", "spotify_id"])
    frame = frame.drop_duplicates("spotify_id")  # a playlist may hold a song twice; a playlist file may not
    write_csv_atomic(frame, path)
    load_playlist_file(path, emotion)
    return path


def refresh_playlist(ref: str, emotion: str, directory: Path | str | None = None) -> Path:
    """Replace the emotion's playlist file with the tracks of a Spotify playlist."""
    canonical_emotion(emotion)  # a typo fails before any network call
    return write_playlist(fetch_playlist(ref), emotion, directory)
