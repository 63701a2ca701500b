"""`emotune recommend` / `emotune music ...`, Spotify refresh and Kaggle download, all without network."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import urllib3
from helpers.network import unreachable

from emotune.cli import main
from emotune.config import REPO_ROOT
from emotune.music import load_playlists
from emotune.music.spotify import SpotifyError, items_to_rows, playlist_id, refresh_playlist, write_playlist


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_recommend_table_and_json(capsys):
    code, out, _ = run(capsys, "recommend", "--emotion", "sad", "--strategy", "uplift", "-k", "6")
    lines = out.strip().splitlines()
    assert code == 0 and "valence 0.15, energy 0.25" in lines[0] and len(lines) == 2 + 6
    assert "catalog mode, 686 tracks" in lines[0]  # the built-in catalogue: every track has its Spotify id
    assert all(" spotify " in line and "open.spotify.com/track/" in line for line in lines[2:])

    probs = "0,0,0,0.5,0.5,0,0"
    code, out, _ = run(
        capsys, "recommend", "--probs", probs, "-k", "4", "--json", "--seed", "1", "music=playlists"
    )
    payload = json.loads(out)
    assert code == 0 and payload["target"] == {"valence": 0.5, "energy": 0.475}
    assert sorted(t["emotion"] for t in payload["tracks"]) == ["happy", "happy", "sad", "sad"]
    assert {"kind", "url", "embed_url", "path"} <= set(payload["tracks"][0]["play"])

    first = payload["tracks"][0]["id"]
    code, out, _ = run(
        capsys, "recommend", "--probs", probs, "-k", "4", "--json", "--seed", "1", "--exclude", first,
        "music=playlists",
    )  # fmt: skip
    assert first not in {t["id"] for t in json.loads(out)["tracks"]}


def fresh_clone(root: Path) -> Path:
    """The package and its configuration, copied where there is no data/ and no development data beside."""
    for part in ("src", "conf"):
        shutil.copytree(REPO_ROOT / part, root / part, ignore=shutil.ignore_patterns("__pycache__"))
    return root


def test_recommend_on_a_fresh_clone_plays_real_tracks(tmp_path):
    """`emotune recommend --emotion sad|happy --json` with neither data/ nor the development data: every track
    plays (a Spotify id or a local file) and the two lists' valences (real audio features) differ clearly."""
    clone = fresh_clone(tmp_path / "clone")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOTUNE_")}
    env |= {"PYTHONPATH": str(clone / "src"), "EMOTUNE_SHARED_DIR": str(tmp_path / "no-shared")}
    where = subprocess.run(
        [sys.executable, "-c", "import emotune; print(emotune.__file__)"],
        cwd=clone, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(clone)  # the copy runs, not the checkout
    mean_valence = {}
    for emotion in ("sad", "happy"):
        done = subprocess.run(
            [sys.executable, "-m", "emotune.cli", "recommend", "--emotion", emotion, "--json"],
            cwd=clone, env=env, capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        tracks = json.loads(done.stdout)["tracks"]
        assert len(tracks) == 10
        for t in tracks:
            assert (t["play"]["kind"] == "spotify" and len(t["id"]) == 22) or t["play"]["path"], t
        mean_valence[emotion] = sum(t["valence"] for t in tracks) / len(tracks)
    assert mean_valence["happy"] - mean_valence["sad"] >= 0.3, mean_valence
    assert not (clone / "data").exists()


def test_recommend_with_catalogue_override(capsys, shared_data, tmp_path):
    catalog = shared_data / "music" / "data_moods.csv.gz"
    if not catalog.is_file():
        pytest.skip("data_moods.csv.gz not in ../shared")
    code, out, _ = run(
        capsys, "recommend", "--emotion", "happy", "-k", "3", "--json", f"music.catalog_path={catalog}"
    )
    tracks = json.loads(out)["tracks"]
    assert code == 0 and len(tracks) == 3 and all(t["play"]["kind"] == "spotify" for t in tracks)


def test_cli_errors_are_clear(capsys):
    code, _, err = run(capsys, "recommend", "--emotion", "glad")
    assert code == 2 and "unknown emotion 'glad'" in err
    code, _, err = run(capsys, "recommend", "--probs", "0.5,0.5")
    assert code == 2 and "needs 7 numbers" in err
    code, _, err = run(capsys, "recommend", "--emotion", "sad", "music.catalog_path=/nonexistent/c.csv")
    assert code == 2 and "/nonexistent/c.csv" in err and "not found" in err


def test_music_validate(capsys):
    code, out, _ = run(capsys, "music", "validate", "--json")
    summary = json.loads(out)
    assert (
        code == 0 and summary["mode"] == "catalog" and summary["tracks"] == summary["with_spotify_id"] == 686
    )
    code, out, _ = run(capsys, "music", "validate", "--json", "music=playlists")
    summary = json.loads(out)
    assert code == 0 and summary["mode"] == "playlists" and min(summary["per_emotion"].values()) >= 20
    assert summary["with_spotify_id"] == 19  # the curated songs that are catalogue rows


def test_spotify_without_credentials(capsys, monkeypatch):
    monkeypatch.delenv("SPOTIPY_CLIENT_ID", raising=False)
    monkeypatch.delenv("SPOTIPY_CLIENT_SECRET", raising=False)
    code, _, err = run(
        capsys, "music", "spotify-refresh", "--playlist", "spotify:playlist:" + "a" * 22, "--emotion", "sad"
    )
    assert code == 2 and "SPOTIPY_CLIENT_ID" in err and "SPOTIPY_CLIENT_SECRET" in err


def test_spotify_failure_is_fast_and_writes_nothing(monkeypatch, tmp_path):
    # What keeps an unreachable Spotify quick: one connection attempt (no retries) with a short timeout.
    monkeypatch.setenv("SPOTIPY_CLIENT_ID", "not-a-real-id")
    monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", "not-a-real-secret")
    timeouts = unreachable(monkeypatch, urllib3.util.connection)
    with pytest.raises(SpotifyError, match=r"cannot reach Spotify"):
        refresh_playlist("https://open.spotify.com/playlist/37i9dQZF1DXcBWIGoYBM5M?si=1", "happy", tmp_path)
    assert len(timeouts) == 1 and isinstance(timeouts[0], int | float) and 0 < timeouts[0] <= 10, timeouts
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="unknown emotion"):
        refresh_playlist("37i9dQZF1DXcBWIGoYBM5M", "elated", tmp_path)


def test_spotify_rejected_credentials_are_said_and_write_nothing(monkeypatch, tmp_path):
    """Spotify cannot be reached from the tests, so a local server stands in for its token endpoint and
    answers what Spotify answers a bad client secret (HTTP 400, invalid_client): what is tested is spotipy's
    own handling of that answer and ours of spotipy's error, not a SpotifyOauthError raised by hand."""
    from spotipy.oauth2 import SpotifyClientCredentials

    requests_seen: list[tuple[str, str, str, str]] = []

    class TokenEndpoint(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode()
            requests_seen.append((self.command, self.path, self.headers.get("Authorization", ""), body))
            answer = json.dumps({"error": "invalid_client", "error_description": "Invalid client"}).encode()
            self.send_response(400)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer)))
            self.end_headers()
            self.wfile.write(answer)

        def log_message(self, *args: object) -> None:  # no access log on stderr
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), TokenEndpoint)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/api/token"
        monkeypatch.setattr(SpotifyClientCredentials, "OAUTH_TOKEN_URL", url)
        for name in ("no_proxy", "NO_PROXY"):  # a proxy in the environment must not take the local request
            monkeypatch.setenv(name, "127.0.0.1")
        monkeypatch.setenv("SPOTIPY_CLIENT_ID", "not-a-real-id")
        monkeypatch.setenv("SPOTIPY_CLIENT_SECRET", "not-a-real-secret")
        with pytest.raises(SpotifyError, match=r"rejected the credentials in SPOTIPY_CLIENT_ID/") as raised:
            refresh_playlist("https://open.spotify.com/playlist/37i9dQZF1DXcBWIGoYBM5M", "happy", tmp_path)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    assert "invalid_client" in str(raised.value) and "Invalid client" in str(raised.value)
    # One token request (no retry), the client-credentials grant with the environment's id and secret.
    basic = "Basic " + base64.b64encode(b"not-a-real-id:not-a-real-secret").decode()
    assert requests_seen == [("POST", "/api/token", basic, "grant_type=client_credentials")], requests_seen
    assert not list(tmp_path.iterdir())


def test_playlist_refs():
    pid = "37i9dQZF1DXcBWIGoYBM5M"
    for ref in (pid, f"spotify:playlist:{pid}", f"https://open.spotify.com/intl-de/playlist/{pid}?si=abc"):
        assert playlist_id(ref) == pid
    with pytest.raises(SpotifyError, match="not a Spotify playlist"):
        playlist_id("https://example.com/x")


def test_playlist_items_become_a_valid_playlist_file(tmp_path):
    # The shape of GET /playlists/{id}/tracks items (abridged): tracks, an episode and a local file.
    track = lambda tid, name, artists, album: {  # noqa: E731
        "track": {"type": "track", "id": tid, "name": name, "is_local": False,
                  "album": {"name": album}, "artists": [{"name": a} for a in artists]}
    }  # fmt: skip
    items = [
        track(
            "4uLU6hMCjMI75M1A2tKUQC", "Never Gonna Give You Up", ["Rick Astley"], "Whenever You Need Somebody"
        ),
        track("7ouMYWpwJ422jRcDASZB7P", "Sunflower", ["Post Malone", "Swae Lee"], "Spider-Verse"),
        {"track": {"type": "episode", "id": "5Xt5DXGzch68nYYamXrNxZ", "name": "A podcast"}},
        {"track": {"type": "track", "id": None, "name": "my.mp3", "is_local": True, "artists": []}},
        {"track": None},
        track(
            "4uLU6hMCjMI75M1A2tKUQC", "Never Gonna Give You Up", ["Rick Astley"], "Whenever You Need Somebody"
        ),
    ]
    rows = items_to_rows(items)
    assert [r["Artist"] for r in rows] == ["Rick Astley", "Post Malone, Swae Lee", "Rick Astley"]
    path = write_playlist(rows, "happy", tmp_path)
    frame = load_playlists(tmp_path)
    assert path.name == "happy.csv" and list(frame["spotify_id"]) == [
        "4uLU6hMCjMI75M1A2tKUQC",
        "7ouMYWpwJ422jRcDASZB7P",
    ]
    with pytest.raises(SpotifyError, match="no tracks"):
        write_playlist([], "sad", tmp_path)


@pytest.mark.parametrize("credentials", [False, True])
def test_download_without_credentials_or_offline_fails_fast(capsys, monkeypatch, tmp_path, credentials):
    """Without credentials: said before any connection. With dummy ones, offline: one connection attempt with
    a short timeout, then "cannot reach". Never kagglehub (slow to import, retries for long offline). Either
    way a clear error, the way to do it by hand, and nothing written."""
    for name in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_CONFIG_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    if credentials:
        monkeypatch.setenv("KAGGLE_USERNAME", "nobody")
        monkeypatch.setenv("KAGGLE_KEY", "0" * 32)
    timeouts = unreachable(monkeypatch, socket)
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # importing it fails the command
    out = tmp_path / "music" / "tracks.csv"
    code, _, err = run(capsys, "music", "download", "--out", str(out))
    assert code == 2 and f"Copy a catalogue CSV to {out} by hand" in err
    if credentials:
        assert "cannot reach" in err and len(timeouts) == 1 and 0 < timeouts[0] <= 3, timeouts
    else:
        assert "no Kaggle credentials" in err and timeouts == []
    assert not out.parent.exists()
