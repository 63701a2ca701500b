"""The page in a real browser: headless Chromium (Playwright) against a real `bentoml serve`, its webcam fed
by a fake-camera y4m file made from a face photo; a snapshot upload with two faces; the local-file player and
"this song feels…" on a folder of generated tones (the Spotify player: test_spotify_browser.py).

Screenshots go to test-artifacts/ (git-ignored). Needs /usr/bin/chromium (`apt-get install chromium`; .ci/run
installs it): without it the tests skip.
"""

from __future__ import annotations

import re
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers.browser import ARTIFACTS, serve_page, start_camera
from helpers.music import make_wav
from helpers.serving import encode, fer_like_face, paste, tiny_model_dir, write_audit_env, written_since

from emotune.labels import EMOTIONS
from emotune.ui import SPOTIFY_API

pytestmark = [pytest.mark.slow, pytest.mark.browser]

FACE_FRAMES, BLANK_FRAMES = 30, 25  # the fake camera loops: 3 s of a face, then 2.5 s of an empty room
NO_FACE_S = 1.0
# Long enough for the checks of the first track to run while it plays, even on a busy machine (1.2 s was
# not: the player had moved on); short enough to wait for it to end.
TONE_S = 4.0
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif", ".bmp"}


MYSTERY = "Mystery Artist - Mystery Tone.wav"  # no tags, no sidecar line: no mood until the page gives one


def write_library(folder: Path) -> Path:
    """One short tone per emotion, placed by the library's sidecar file, so every mood has a local track, and
    a file without a mood (MYSTERY)."""
    folder.mkdir(parents=True, exist_ok=True)
    rate = 8000
    rows = ["path,emotion"]
    for i, emotion in enumerate(EMOTIONS):
        name = f"Test Tones - {emotion.title()} Tone.wav"
        t = np.arange(int(rate * TONE_S)) / rate
        samples = (0.3 * np.sin(2 * np.pi * (330 + 40 * i) * t) * 32767).astype("<i2")
        with wave.open(str(folder / name), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(samples.tobytes())
        rows.append(f"{name},{emotion}")
    (folder / "emotune_moods.csv").write_text("\n".join(rows) + "\n")
    make_wav(folder / MYSTERY, seconds=TONE_S)
    return folder


def image_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("ui")
    face_frame, _ = paste(fer_like_face(), size=(480, 640), at=(240, 110), scale=3)
    empty = np.full((480, 640, 3), 128, np.uint8)
    library = write_library(tmp / "library")
    gradio_tmp = tmp / "gradio"
    gradio_tmp.mkdir()
    overrides = f"music.library_dir={library} music.local_bonus=0.5 ui.smoothing.no_face_s={NO_FACE_S} ui.k=6"
    with serve_page(
        tmp,
        [face_frame] * FACE_FRAMES + [empty] * BLANK_FRAMES,
        "ui-server.log",
        EMOTUNE_MODEL_DIR=str(tiny_model_dir(tmp_path_factory)),
        EMOTUNE_OVERRIDES=overrides,
        GRADIO_TEMP_DIR=str(gradio_tmp),
        **write_audit_env(tmp / "writes.log"),  # what the server writes
    ) as served:
        yield {**served, "gradio_tmp": gradio_tmp}


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def upload(page, path: Path) -> None:
    """Upload into the snapshot input once the page has cleared it after the previous picture."""
    page.wait_for_function(
        "document.querySelector('#photo').innerText.includes('Drop Image Here')", timeout=15_000
    )
    page.set_input_files("#photo input[type='file']", str(path))


def wait_for_mood(page, text: str, timeout_ms: int = 30_000) -> None:
    """Wait until the mood panel says `text`; on a timeout, fail with what the page showed instead (and a
    screenshot), so a failure on CI says what happened."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(
            "text => document.querySelector('#mood').innerText.includes(text)", arg=text, timeout=timeout_ms
        )
    except PlaywrightTimeout:
        shot(page, "ui-timeout")
        pytest.fail(
            f"no {text!r} in the mood panel after {timeout_ms / 1000:.0f} s; it says "
            f"{page.inner_text('#mood')!r}; the snapshot input says {page.inner_text('#photo')!r}"
        )


def mood_of(page) -> str:
    return page.get_attribute("#mood .et-mood", "data-mood") or ""


def assert_at_most_the_spotify_script(page) -> None:
    """Nothing left the page for another host except, once, Spotify's player script."""
    assert set(page.outside) <= {SPOTIFY_API} and len(page.outside) <= 1, page.outside


def test_live_webcam_shows_emotion_playlist_and_player(page, setup):
    writes_before = (setup["tmp"] / "writes.log").stat().st_size
    assert "No face yet" in page.inner_text("#mood")
    start_camera(page)

    page.wait_for_selector("#mood .et-mood:not([data-mood=''])", timeout=30_000)
    mood = mood_of(page)
    assert mood in EMOTIONS
    # The annotated frame: a JPEG data URL (never a file URL). "1 face" is checked below, once the looping
    # camera brings the face back: the mood may settle just before the room empties on a busy machine.
    src = page.get_attribute("#view img", "src")
    assert src.startswith("data:image/jpeg;base64,")
    assert len(page.query_selector_all("#probs .et-bar")) == len(EMOTIONS)

    # The playlist for that mood, and the player holds a local file from the test library.
    page.wait_for_selector("#playlist li", timeout=10_000)
    assert page.get_attribute("#playlist .et-playlist", "data-mood") == mood
    tracks = page.inner_text("#playlist ol")
    assert len(page.query_selector_all("#playlist li")) == 6
    assert page.get_attribute("#now-playing .et-now", "data-kind") == "local"
    page.wait_for_selector("#player audio[src], #player [src*='.wav']", state="attached", timeout=10_000)
    shot(page, "ui-live")
    # Auto-advance: the tone plays by itself (autoplay), ends, and the next track comes up.
    tone = page.inner_text("#now-playing .et-track")
    page.wait_for_function(
        f"document.querySelector('#now-playing .et-track')?.innerText !== {tone!r}", timeout=15_000
    )

    # The face leaves: the page says so and keeps the playlist; then it comes back (the video loops).
    wait_for_mood(page, "No face in view", 15_000)
    assert page.inner_text("#playlist ol") == tracks and mood_of(page) == mood
    shot(page, "ui-no-face")
    page.wait_for_function("/\\b1 face\\b/.test(document.querySelector('#mood').innerText)", timeout=15_000)
    assert page.inner_text("#playlist ol") == tracks  # the same face, the same mood: no new playlist

    # Next/previous move through the list; uplift makes a new list for the same mood.
    first = page.inner_text("#now-playing .et-track")
    page.click("#next")
    page.wait_for_function(
        f"document.querySelector('#now-playing .et-track')?.innerText !== {first!r}", timeout=10_000
    )
    page.click("#prev")
    page.wait_for_function(
        f"document.querySelector('#now-playing .et-track')?.innerText === {first!r}", timeout=10_000
    )
    page.click("#strategy label:has-text('uplift')")
    page.wait_for_selector("#playlist .et-playlist[data-strategy='uplift']", timeout=10_000)

    # Nothing from elsewhere, except Spotify's iFrame API script once a catalogue track came up to play
    # (offline here, so it fails, once, and Spotify's player is never created).
    assert_at_most_the_spotify_script(page)
    assert page.errors == [] and len(page.console_errors) <= 1, page.console_errors
    # Camera frames never reached the disk: in the seconds the camera streamed, the server wrote only the
    # tracks it played (Gradio copies each into its folder through a temporary ".<name>.wav.<random>"), and
    # that folder holds no picture.
    home = str(setup["tmp"] / "bentoml")  # the server's metrics files
    written = [p for p in written_since(setup["tmp"] / "writes.log", writes_before) if not p.startswith(home)]
    assert written and all(re.search(r"\.wav(\.\w+)?$", path) for path in written), written
    assert image_files(setup["gradio_tmp"]) == []


def test_snapshot_with_two_faces(page, setup):
    writes_before = (setup["tmp"] / "writes.log").stat().st_size
    big, _ = paste(fer_like_face(), size=(480, 760), at=(40, 90), scale=4)  # 192 px
    small, _ = paste(fer_like_face(), size=(480, 760), at=(480, 150), scale=3)  # 144 px
    photo = np.where(np.arange(760)[None, :, None] < 400, big, small).astype(np.uint8)
    path = setup["tmp"] / "two-faces.png"
    path.write_bytes(encode(photo))

    page.click("#tab-snapshot-button, button[role='tab']:has-text('Photo')")
    upload(page, path)
    wait_for_mood(page, "This picture looks")
    assert mood_of(page) in EMOTIONS
    assert "2 faces · mood from the largest face" in page.inner_text("#mood")
    assert page.get_attribute("#view img", "src").startswith("data:image/jpeg;base64,")
    page.wait_for_selector("#playlist li", timeout=10_000)
    shot(page, "ui-snapshot")

    # The other face rule: the mood from the average of both faces.
    page.click("#rule label:has-text('average')")
    upload(page, path)
    wait_for_mood(page, "average of all faces")

    # A file that is not a picture is refused by the upload route (415) and never stored; the page says
    # why, without a stack trace.
    bad = setup["tmp"] / "notes.png"
    bad.write_bytes(b"this is not an image")
    upload(page, bad)
    page.wait_for_function("document.body.innerText.includes('not an image')", timeout=15_000)
    assert "Traceback" not in page.inner_text("body")
    # A tone ends in 4 s and a catalogue track may follow: then Spotify's script, once, and nothing else.
    assert_at_most_the_spotify_script(page)
    assert page.errors == []
    # The uploads were read into memory and deleted at once. The write audit shows what the server wrote:
    # only Gradio's upload route, into its folder (a temporary name, renamed to <hash>/<name>), and that
    # folder holds no picture afterwards: each photo was written by the upload and deleted once read.
    deadline = time.monotonic() + 5
    while image_files(setup["gradio_tmp"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert image_files(setup["gradio_tmp"]) == []
    home = str(setup["tmp"] / "bentoml")  # the server's metrics files
    written = [p for p in written_since(setup["tmp"] / "writes.log", writes_before) if not p.startswith(home)]
    assert written, "the audit saw no upload: is it watching?"
    assert all(Path(p).is_relative_to(setup["gradio_tmp"]) for p in written), written


def choose(page, dropdown: str, option: str) -> None:
    """Pick an option of a Gradio dropdown by its label."""
    page.click(f"{dropdown} input")
    page.click(f"{dropdown} [data-testid='dropdown-option']:has-text({option!r})", timeout=10_000)


def test_this_song_feels_places_a_file_and_the_next_playlist_has_it(page, setup):
    """A file without a mood is never recommended; given one in the page, it is written to the folder's
    sidecar and the next playlist for that mood has it."""
    library = setup["tmp"] / "library"
    path = setup["tmp"] / "face.png"
    path.write_bytes(encode(paste(fer_like_face(), size=(480, 640), at=(240, 110), scale=3)[0]))
    page.click("#tab-snapshot-button, button[role='tab']:has-text('Photo')")
    upload(page, path)
    wait_for_mood(page, "This picture looks")
    mood = mood_of(page)
    page.wait_for_selector("#playlist li", timeout=10_000)
    assert "Mystery Tone" not in page.inner_text("#playlist ol")

    choose(page, "#feels-song", f"{MYSTERY} (no mood yet)")
    choose(page, "#feels", mood)
    page.wait_for_function(
        "document.querySelector('#feels-note').innerText.includes('Saved')", timeout=15_000
    )
    assert f"Saved: {MYSTERY} feels {mood}" in page.inner_text("#feels-note")
    assert f"{MYSTERY},{mood}" in (library / "emotune_moods.csv").read_text().splitlines()

    page.click("#strategy label:has-text('uplift')")  # a new playlist for the same mood
    page.wait_for_selector("#playlist .et-playlist[data-strategy='uplift']", timeout=10_000)
    assert "Mystery Tone" in page.inner_text("#playlist ol")
    shot(page, "ui-feels")
    # A tone ends in 4 s and a catalogue track may follow: then Spotify's script, once, and nothing else.
    assert_at_most_the_spotify_script(page)
    assert page.errors == []
