"""Spotify's player in the page: headless Chromium (Playwright) against a real `bentoml serve` with the
default configuration (the built-in catalogue, no music folder), its fake camera showing an empty room, then
a face.

The tests run offline. The first checks what a user without the internet gets: the page asks for Spotify's
iFrame API script only once the mood has settled, the request fails, and one line says what to do instead.
The second stands in for Spotify's script (Playwright answers its URL with STAND_IN, a few lines with the
methods the page uses) to check the page's side: the player is created for the first recommended track, a
track that ends brings the next one, Previous/Next load theirs. Needs /usr/bin/chromium; skips without it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import numpy as np
import pytest
from helpers.browser import ARTIFACTS, serve_page, start_camera
from helpers.serving import fer_like_face, paste, tiny_model_dir

from emotune.ui import SPOTIFY_API

pytestmark = [pytest.mark.slow, pytest.mark.browser]

EMPTY_FRAMES, FACE_FRAMES = 50, 40  # the camera loops: 5 s of an empty room, then 4 s of a face
TRACK_ID = re.compile(r"[0-9A-Za-z]{22}")
HINT = (
    "Spotify previews need the internet. To play your own music here: make serve MUSIC=~/Music or "
    "emotune serve --music-dir PATH."
)
# Spotify's iFrame API as far as the page uses it: createController replaces the element with an iframe of
# the track's embed URL and hands back a controller; the test drives its events through window.__emit.
STAND_IN = """
window.__spotify = {created: [], loaded: [], plays: 0, listeners: {}};
window.__emit = (name, data) => (__spotify.listeners[name] || []).forEach((f) => f({data: data}));
const embedUrl = (uri) => "https://open.spotify.com/embed/track/" + uri.split(":")[2];
window.onSpotifyIframeApiReady({
  createController(element, options, callback) {
    const iframe = document.createElement("iframe");
    iframe.src = embedUrl(options.uri);
    element.replaceWith(iframe);
    __spotify.created.push(options.uri);
    callback({
      loadUri(uri) { __spotify.loaded.push(uri); iframe.src = embedUrl(uri); },
      play() { __spotify.plays += 1; },
      pause() {},
      addListener(name, f) { (__spotify.listeners[name] = __spotify.listeners[name] || []).push(f); },
    });
    setTimeout(() => __emit("ready", {}), 0);
  },
});
"""


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("spotify")
    face_frame, _ = paste(fer_like_face(), size=(480, 640), at=(240, 110), scale=3)
    empty = np.full((480, 640, 3), 128, np.uint8)
    with serve_page(
        tmp,
        [empty] * EMPTY_FRAMES + [face_frame] * FACE_FRAMES,
        "spotify-server.log",
        EMOTUNE_MODEL_DIR=str(tiny_model_dir(tmp_path_factory)),
        EMOTUNE_OVERRIDES="ui.k=4",
    ) as served:
        yield served


def playlist_ids(page) -> list[str]:
    """The Spotify ids of the playlist, in order (from each track's "Spotify ↗" link)."""
    links = page.eval_on_selector_all("#playlist li a.et-badge", "links => links.map(a => a.href)")
    return [link.rsplit("/", 1)[1] for link in links]


def now_uri(page) -> str:
    return page.get_attribute("#now-playing .et-now", "data-uri") or ""


def wait_for_uri(page, uri: str) -> None:
    page.wait_for_function(
        "uri => document.querySelector('#now-playing .et-now')?.dataset.uri === uri", arg=uri, timeout=15_000
    )


def settle(page) -> list[str]:
    """Stream the empty room (frames are analysed, no mood: nothing may come from elsewhere), then wait for
    the face's mood and its playlist; -> the playlist's Spotify ids."""
    start_camera(page)
    page.wait_for_selector("#view img[alt='the picture: no face found']", timeout=30_000)
    assert page.get_attribute("#mood .et-mood", "data-mood") == ""
    assert page.outside == [], f"fetched from elsewhere before the mood settled: {page.outside}"
    page.wait_for_selector("#now-playing .et-now[data-kind='spotify']", timeout=60_000)
    ids = playlist_ids(page)
    assert len(ids) == 4 and all(TRACK_ID.fullmatch(i) for i in ids), ids
    return ids


def test_offline_the_page_asks_spotify_once_and_says_what_to_do(page):
    ids = settle(page)
    assert now_uri(page) == f"spotify:track:{ids[0]}"  # the first track is up to play
    page.wait_for_selector(f"script[src='{SPOTIFY_API}']", state="attached")  # added only now
    hint = page.wait_for_selector("#spotify .et-offline", state="visible", timeout=30_000)
    assert hint.inner_text().strip() == HINT
    assert page.query_selector("#spotify iframe") is None  # no broken player
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "spotify-offline.png"), full_page=True)

    page.click("#next")  # the next track: the hint stays, and the page does not ask again
    wait_for_uri(page, f"spotify:track:{ids[1]}")
    assert page.is_visible("#spotify .et-offline")
    assert page.outside == [SPOTIFY_API]
    assert page.errors == [] and len(page.console_errors) <= 1, page.console_errors


def test_online_the_player_starts_with_the_first_track_and_moves_on(page):
    def answer(route) -> None:
        if route.request.url == SPOTIFY_API:
            route.fulfill(body=STAND_IN, content_type="text/javascript")
        else:
            route.fulfill(body="<!doctype html><title>player</title>", content_type="text/html")

    page.context.route("https://open.spotify.com/**", answer)
    ids = settle(page)
    uris = [f"spotify:track:{i}" for i in ids]
    frame = page.wait_for_selector("#spotify iframe", timeout=30_000)
    assert frame.get_attribute("src") == f"https://open.spotify.com/embed/track/{ids[0]}"
    assert page.evaluate("__spotify.created") == uris[:1]
    page.wait_for_function("__spotify.plays >= 1", timeout=10_000)  # played as soon as it was ready
    assert not page.is_visible("#spotify .et-offline")

    # The track plays, then ends: the next one comes up and loads into the same player.
    page.evaluate("__emit('playback_update', {isPaused: false, position: 1000, duration: 30000})")
    page.evaluate("__emit('playback_update', {isPaused: true, position: 30000, duration: 30000})")
    wait_for_uri(page, uris[1])
    page.wait_for_function(f"__spotify.loaded.at(-1) === {uris[1]!r}", timeout=10_000)
    page.click("#next")
    wait_for_uri(page, uris[2])
    page.click("#prev")
    wait_for_uri(page, uris[1])
    page.wait_for_function(f"__spotify.loaded.join() === {','.join(uris[1:3] + uris[1:2])!r}", timeout=10_000)
    assert page.evaluate("__spotify.created.length") == 1
    assert page.get_attribute("#spotify iframe", "src") == f"https://open.spotify.com/embed/track/{ids[1]}"

    # Spotify's script, then the embeds of the tracks that came up; nothing else.
    allowed = re.compile(
        rf"{re.escape(SPOTIFY_API)}|https://open\.spotify\.com/embed/track/{TRACK_ID.pattern}"
    )
    assert page.outside[0] == SPOTIFY_API and page.outside.count(SPOTIFY_API) == 1
    assert all(allowed.fullmatch(url) for url in page.outside), page.outside
    assert page.errors == [] and page.console_errors == []
