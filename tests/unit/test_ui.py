"""The page's handlers without a browser: real face detection, real music, and a model whose answer the test
picks (a trained model cannot be told to be happy), so the mood -> playlist rules can be checked exactly."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
from helpers.serving import encode, fer_like_face, paste

from emotune.config import compose
from emotune.labels import EMOTIONS
from emotune.music import Play, Recommendation, Recommender
from emotune.recognizer import EmotionRecognizer
from emotune.ui import FRIENDLY_ERROR, Engine, Page, annotate, frame_reader, now_playing_html, playlist_html
from emotune.vision import make_detector

SKIP = {"__type__": "update"}  # what gr.skip() sends: leave the component as it is


def onehot(emotion: str, p: float = 0.9) -> np.ndarray:
    probs = np.full(len(EMOTIONS), (1 - p) / (len(EMOTIONS) - 1), dtype=np.float32)
    probs[EMOTIONS.index(emotion)] = p
    return probs


class ScriptedModel:
    """The model's stand-in: every face gets `probs`; records each call's batch size."""

    def __init__(self) -> None:
        self.probs = onehot("happy")
        self.batches: list[int] = []

    def predict(self, x: np.ndarray) -> np.ndarray:
        self.batches.append(len(x))
        return np.tile(self.probs, (len(x), 1))


@pytest.fixture(scope="module")
def cfg():
    return compose(
        ["ui.smoothing.hold_s=0", "ui.smoothing.min_frames=2", "ui.smoothing.no_face_s=0", "ui.k=5"]
    )


@pytest.fixture(scope="module")
def recommender(cfg):
    return Recommender.from_config(cfg)


@pytest.fixture
def model():
    return ScriptedModel()


@pytest.fixture
def page(cfg, recommender, model):
    engine = Engine(EmotionRecognizer(model, make_detector("haar")), recommender)
    return Page(lambda: engine, cfg)


FACE, _ = paste(fer_like_face(), scale=3)
EMPTY = np.full((480, 640, 3), 128, np.uint8)


def test_playlist_changes_only_when_the_smoothed_mood_does(page, model):
    viewer = page.new_viewer()
    first, second = (page.live(FACE, "largest", "match", viewer) for _ in range(2))
    assert first[3] == SKIP and "Reading your expression" in first[2]  # min_frames=2: not settled yet
    assert 'data-mood="happy"' in second[2] and 'data-mood="happy"' in second[3]
    assert (
        second[0].startswith('<div class="et-card et-view"><img') and "data:image/jpeg;base64," in second[0]
    )
    happy_list = [t.id for t in viewer.playlist]
    assert len(happy_list) == 5 and viewer.current is viewer.playlist[0]

    model.probs = onehot("angry", 1.0)  # one odd frame
    odd = page.live(FACE, "largest", "match", viewer)
    assert odd[3] == SKIP and 'data-mood="happy"' in odd[2]
    model.probs = onehot("sad")
    for _ in range(6):
        out = page.live(FACE, "largest", "match", viewer)
        if viewer.smoother.mood == "sad":
            break
    assert 'data-mood="sad"' in out[3] and [t.id for t in viewer.playlist] != happy_list
    assert all(n == 1 for n in model.batches)  # one face, one model call per frame

    # No face: said at once (no_face_s=0), the sad playlist stays.
    gone = page.live(EMPTY, "largest", "match", viewer)
    assert "keeping your sad playlist" in gone[2] and gone[3] == SKIP and viewer.made_for == ("sad", "match")


def test_several_faces_are_classified_in_one_batch(page, model):
    left, _ = paste(fer_like_face(), size=(480, 760), at=(40, 90), scale=4)
    right, _ = paste(fer_like_face(), size=(480, 760), at=(480, 150), scale=3)
    frame = np.where(np.arange(760)[None, :, None] < 400, left, right).astype(np.uint8)
    viewer = page.new_viewer()
    out = page.live(frame, "average", "match", viewer)
    assert model.batches == [2]
    assert "2 faces · mood from the average of all faces" in out[2]


def test_strategy_switch_and_player_buttons(page):
    viewer = page.new_viewer()
    for _ in range(2):
        page.live(FACE, "largest", "match", viewer)
    playlist, _, _ = page.strategy_changed("uplift", viewer)
    assert 'data-strategy="uplift"' in playlist and viewer.made_for == ("happy", "uplift")
    assert page.strategy_changed("uplift", viewer) == (SKIP, SKIP, SKIP)  # nothing changed
    page.next(viewer)
    page.next(viewer)
    assert viewer.position == 2
    page.previous(viewer)
    assert viewer.position == 1 and viewer.current is viewer.playlist[1]
    for _ in range(10):
        page.next(viewer)
    assert viewer.position == len(viewer.playlist) - 1  # stays on the last track
    assert page.ended(viewer) == (SKIP, SKIP, SKIP)  # the end of the list: nothing more to play
    # A playing song is not cut off by a new list: the new list starts when it ends.
    page.playing(viewer)
    playing = viewer.current
    page.strategy_changed("match", viewer)
    assert viewer.current is playing and viewer.position == -1
    page.ended(viewer)
    assert viewer.position == 0 and viewer.current is viewer.playlist[0]


def test_snapshot_is_read_into_memory_and_deleted(page, tmp_path):
    viewer = page.new_viewer()
    photo = tmp_path / "upload.png"
    photo.write_bytes(encode(FACE))
    out = page.snapshot(str(photo), "largest", "match", viewer)
    assert not photo.exists()
    assert "This picture looks happy" in out[2] and 'data-mood="happy"' in out[3]
    assert viewer.smoother.mood == "happy"  # at once: a snapshot needs no frames to settle
    assert out[-1] == 1  # the count of handled pictures: its change clears the input for the next one

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a picture at all")
    out = page.snapshot(str(bad), "largest", "match", viewer)
    assert not bad.exists() and "be used: not an image" in out[2]
    assert out[-1] == 2  # a refused file is handled too: the input is cleared for the next try

    # The cleared input runs the handler once more, with nothing: it must change nothing, not even the
    # count, or the clear would be sent again and could wipe a picture chosen meanwhile.
    assert page.snapshot(None, "largest", "match", viewer) == (gr.skip(),) * 7
    assert viewer.pictures == 2

    empty = tmp_path / "empty-room.png"
    empty.write_bytes(encode(EMPTY))
    out = page.snapshot(str(empty), "largest", "match", viewer)
    assert "No face found in this picture" in out[2] and viewer.smoother.mood == "happy"


def test_only_the_streaming_input_takes_the_camera(page, cfg):
    """docs/page.md "Privacy": camera frames stay in memory. The live input streams them as data URLs; a
    picture taken in any other gr.Image would be uploaded to Gradio's folder on disk, so no other input has
    the camera."""
    from emotune.ui import build_page

    images = [b for b in build_page(page.engine, cfg).blocks.values() if isinstance(b, gr.Image)]
    assert sorted(b.elem_id for b in images) == ["camera", "photo"]
    assert {b.elem_id: b.streaming for b in images if "webcam" in b.sources} == {"camera": True}


def test_errors_are_logged_and_the_page_says_something_short(cfg, caplog):
    def broken():
        raise RuntimeError("model exploded")

    page = Page(broken, cfg)
    with caplog.at_level(logging.ERROR, logger="emotune.ui"):
        out = page.live(FACE, "largest", "match", page.new_viewer())
    assert FRIENDLY_ERROR in out[2] and "exploded" not in out[2]
    assert "model exploded" in caplog.text


def _track(kind: str, name: str = "Song", **play) -> Recommendation:
    return Recommendation(
        id=name,
        name=name,
        artist="Band & Co",
        album="",
        genre="",
        valence=0.5,
        energy=0.5,
        popularity=None,
        source="catalog",
        emotion="",
        target=(0.5, 0.5),
        distance=0.0,
        play=Play(kind=kind, url=play.pop("url", "https://open.spotify.com/track/x"), **play),
    )


def test_playlist_and_player_markup(page):
    viewer = page.new_viewer()
    viewer.made_for = ("happy", "match")
    viewer.playlist = [
        _track("spotify", "<script>alert(1)</script>", embed_url="https://open.spotify.com/embed/track/x"),
        _track("search", "Second"),
    ]
    viewer.select(0)
    markup = playlist_html(viewer)
    assert "<script>" not in markup and "&lt;script&gt;" in markup and "Band &amp; Co" in markup
    assert 'class="et-current"' in markup and markup.count("<li") == 2
    # A Spotify track names its URI for the page's player script; the card itself loads nothing.
    assert 'data-kind="spotify" data-uri="spotify:track:x"' in now_playing_html(viewer)
    assert "<iframe" not in now_playing_html(viewer)
    viewer.select(1)
    assert "Find it on Spotify" in now_playing_html(viewer) and "<iframe" not in now_playing_html(viewer)
    assert "Music is unavailable" in playlist_html(viewer, "error: catalogue broken")


def test_annotate_draws_on_a_copy_and_marks_the_chosen_face():
    frame = np.full((480, 640, 3), 128, np.uint8)
    faces = [
        type("F", (), {"box": (50, 100, 100, 100), "emotion": "sad", "probabilities": onehot("sad")}),
        type("F", (), {"box": (350, 100, 200, 200), "emotion": "happy", "probabilities": onehot("happy")}),
    ]
    out = annotate(frame, faces, chosen=[1])
    assert (frame == 128).all()  # the frame itself is untouched
    assert tuple(out[150, 50]) == (37, 99, 235)  # the sad face's box edge, in its colour
    thin = np.sum(np.all(out[150, 40:70] == (37, 99, 235), axis=1))
    thick = np.sum(np.all(out[150, 340:370] == (234, 138, 0), axis=1))
    assert thick > thin > 0
    small = annotate(np.zeros((2000, 3000, 3), np.uint8), faces, [0])
    assert max(small.shape[:2]) == 960  # big photos are drawn scaled down


def test_the_page_app_serves_offline_with_system_fonts(page, cfg):
    from fastapi.testclient import TestClient

    from emotune.ui import page_app

    with TestClient(page_app(cfg, engine=page.engine)) as client:
        index = client.get("/")
        assert index.status_code == 200 and "emotune" in index.text
        theme = client.get("/theme.css")
        assert theme.status_code == 200
    for text in (index.text, theme.text):
        assert "fonts.googleapis" not in text and "@font-face" not in text
    assert "ui-sans-serif" in theme.text


def test_calibrate_reads_the_resting_face_as_neutral_and_reset_undoes_it(cfg, recommender, model):
    """Calibrate on a face the model reads as sad at rest: from then on that face reads neutral and a smile
    still reads happy; too few faces keep the state; Reset goes back to the model's own reading."""
    cfg = compose(
        [
            "ui.smoothing.hold_s=0",
            "ui.smoothing.min_frames=2",
            "ui.smoothing.no_face_s=0",
            "ui.calibration.seconds=3",
            "ui.calibration.min_frames=3",
        ]
    )
    ticks = iter(np.arange(0.0, 1000.0, 1.0))  # one second per frame
    engine = Engine(EmotionRecognizer(model, make_detector("haar")), recommender)
    page = Page(lambda: engine, cfg, clock=lambda: float(next(ticks)))
    viewer = page.new_viewer()
    assert "press Calibrate" in page._calibration_state(page._calibration(viewer))
    model.probs = onehot("sad", 0.6)  # this face at rest
    for _ in range(2):
        page.live(FACE, "largest", "match", viewer)
    assert viewer.smoother.mood == "sad"

    assert "Calibrating" in page.calibrate(viewer)
    outputs = [page.live(FACE, "largest", "match", viewer) for _ in range(3)]
    assert all(o[6] == SKIP for o in outputs[:-1])  # the window (3 s) is still open
    assert 'data-state="calibrated"' in outputs[-1][6] and "it read sad 60%" in outputs[-1][6]
    for _ in range(2):
        page.live(FACE, "largest", "match", viewer)
    assert viewer.smoother.mood == "neutral"  # the resting face now reads neutral
    model.probs = onehot("happy", 0.8)
    for _ in range(10):  # the smoothing's moving average takes a few frames to turn
        page.live(FACE, "largest", "match", viewer)
    assert viewer.smoother.mood == "happy"

    page.calibrate(viewer)  # no face in view: the calibration stays
    failed = [page.live(EMPTY, "largest", "match", viewer) for _ in range(3)][-1][6]
    assert failed != SKIP and "found in 0 of" in failed and viewer.calibration.resting is not None

    assert 'data-state="plain"' in page.reset_calibration(viewer)
    model.probs = onehot("sad", 0.6)
    for _ in range(2):
        page.live(FACE, "largest", "match", viewer)
    assert viewer.smoother.mood == "sad"  # the model's own reading again


def test_a_photo_is_not_read_through_the_live_calibration(page, model, tmp_path):
    viewer = page.new_viewer()
    model.probs = onehot("sad", 0.6)
    page._calibration(viewer).resting = onehot("sad", 0.6).astype(np.float64)
    photo = tmp_path / "photo.png"
    photo.write_bytes(encode(FACE))
    result = page.snapshot(str(photo), "largest", "match", viewer)
    assert 'data-mood="sad"' in result[2]


def test_the_timeline_grows_with_the_stream_and_is_redrawn_at_its_own_pace(cfg, recommender, model):
    cfg = compose(["ui.smoothing.hold_s=0", "ui.smoothing.min_frames=2", "ui.timeline.refresh_s=3"])
    ticks = iter(np.arange(0.0, 1000.0, 0.5))  # two frames a second
    engine = Engine(EmotionRecognizer(model, make_detector("haar")), recommender)
    page = Page(lambda: engine, cfg, clock=lambda: float(next(ticks)))
    viewer = page.new_viewer()
    charts = [page.live(FACE, "largest", "match", viewer)[7] for _ in range(16)]
    drawn = [c for c in charts if c != SKIP]
    assert 3 <= len(drawn) <= 4  # 8 s of frames, redrawn at most every 3 s, not with every frame
    points = [int(re.search(r'data-points="(\d+)"', c).group(1)) for c in drawn if "data-points" in c]
    assert points == sorted(points) and points[-1] >= 6  # one point a second, growing
    assert "happy" in drawn[-1] and "Download this session" in drawn[-1]


def test_camera_frames_are_decoded_within_the_image_limits(tmp_path):
    """The camera's frames come as data URLs: decoded in memory within serve.max_image_bytes and
    serve.max_image_pixels (Gradio's own decoding took any size up to Pillow's ~180 Mpx)."""
    from gradio.data_classes import ImageData

    def url(data: bytes) -> ImageData:
        return ImageData(url="data:image/png;base64," + base64.b64encode(data).decode())

    read = frame_reader(max_bytes=200_000, max_pixels=640 * 480)
    assert read(url(encode(FACE))).shape == (*FACE.shape[:2], 3)
    assert read(None) is None
    noise = np.random.default_rng(0).integers(0, 256, (400, 400, 3), dtype=np.uint8)
    for data, words in [
        (encode(noise), "200,000"),  # ~480 kB of PNG
        (encode(np.zeros((600, 800, 3), np.uint8)), "pixels"),  # small file, too many pixels
        (b"not a picture", "not an image"),
    ]:
        with pytest.raises(gr.Error, match=words):
            read(url(data))


def test_this_song_feels_writes_the_sidecar_and_the_next_playlist_uses_it(tmp_path, monkeypatch, model):
    """The control offers the library file in the player and the files without a mood, writes only those,
    only with one of the seven emotions, and the next playlist comes from the reloaded music."""
    from helpers.music import make_wav

    from emotune.music.library import CACHE_DIR_ENV, SIDECAR_NAME

    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    music = tmp_path / "music"
    make_wav(music / "happy" / "sunny.wav", title="Sunny Tone", artist="Tones A")  # placed by its folder
    make_wav(music / "mystery.wav", title="Mystery Tone", artist="Tones B")  # nothing says its mood
    make_wav(tmp_path / "outside.wav", title="Outside", artist="Tones C")
    cfg = compose(
        ["ui.smoothing.hold_s=0", "ui.smoothing.min_frames=2", "ui.k=5", f"music.library_dir={music}"]
    )
    cfg.music.local_bonus = 0.5  # local files first, so the player holds one
    engine = Engine(EmotionRecognizer(model, make_detector("haar")), Recommender.from_config(cfg))
    page = Page(lambda: engine, cfg)
    viewer = page.new_viewer()
    for _ in range(2):
        page.live(FACE, "largest", "match", viewer)  # the model says happy: the sunny tone plays first
    assert viewer.current.name == "Sunny Tone"
    choices = page.feels_choices(viewer)
    assert choices.choices == [
        ("Sunny Tone — Tones A (now)", "happy/sunny.wav"),
        ("mystery.wav (no mood yet)", "mystery.wav"),
    ]
    assert choices.value == "happy/sunny.wav"
    sad_names = lambda: {t.name for t in engine.recommender.recommend("sad", k=10)}  # noqa: E731
    assert "Mystery Tone" not in sad_names()

    # Anything else is refused and nothing is written.
    for song, emotion in (
        ("../outside.wav", "sad"),
        (str(tmp_path / "outside.wav"), "sad"),
        ("mystery.wav", "calm"),
    ):
        note, _, cleared = page.feels(song, emotion, viewer)
        assert "Pick a song of your music folder" in note and cleared is None
    assert not (music / SIDECAR_NAME).exists()
    assert page.feels("mystery.wav", None, viewer) == (SKIP, SKIP, SKIP)

    old = engine.recommender
    note, choices, cleared = page.feels("mystery.wav", "sad", viewer)
    assert "Saved: mystery.wav feels sad" in note and "The next playlist uses it" in note and cleared is None
    assert (music / SIDECAR_NAME).read_text() == "path,emotion\nmystery.wav,sad\n"
    assert engine.recommender is not old and "Mystery Tone" in sad_names()
    assert [value for _, value in choices.choices] == ["happy/sunny.wav"]  # it has a mood now

    page.feels("happy/sunny.wav", "sad", viewer)  # the file in the player, moved to another mood
    assert "Sunny Tone" in sad_names() and "Sunny Tone" not in {
        t.name for t in engine.recommender.recommend("happy", k=10)
    }
    # Without a music folder there is nothing to offer, and nothing is written.
    plain = Page(lambda: engine, compose())
    assert plain.feels_choices(viewer).choices == []
    assert "Pick a song" in plain.feels("mystery.wav", "sad", viewer)[0]


def run_event(client, api_name: str, picture: dict) -> dict:
    """One event of the page through Gradio's real queue, as a browser sends it: the completed message."""
    config = client.get("/config").json()
    event = next(d for d in config["dependencies"] if d.get("api_name") == api_name)
    types = {c["id"]: c for c in config["components"]}
    data = [
        picture if types[i]["type"] == "image" else types[i].get("props", {}).get("value")
        for i in event["inputs"]
    ]
    body = {"data": data, "fn_index": event["id"], "session_hash": "s" + api_name, "trigger_id": None}
    assert client.post("/gradio_api/queue/join", json=body).status_code == 200
    with client.stream("GET", f"/gradio_api/queue/data?session_hash=s{api_name}") as stream:
        for line in stream.iter_lines():
            message = json.loads(line[5:]) if line.startswith("data:") else {}
            if message.get("msg") == "process_completed":
                return message
    raise AssertionError("the event never completed")


def test_the_page_reads_and_deletes_only_files_uploaded_to_it(tmp_path, monkeypatch, model):
    """A client names a picture input's file by its path. A file of the server that was not uploaded, sent
    as a file or as a bare path, to the camera or the photo input, is refused and left as it is; a picture
    uploaded through the page's upload route is read and deleted, and a library file still plays."""
    from fastapi.testclient import TestClient
    from helpers.music import make_wav

    from emotune.music.library import CACHE_DIR_ENV
    from emotune.ui import page_app

    monkeypatch.setenv("GRADIO_TEMP_DIR", str(tmp_path / "gradio"))
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))
    make_wav(tmp_path / "music" / "happy" / "sunny.wav", title="Sunny Tone", artist="Tones A")
    cfg = compose([f"music.library_dir={tmp_path / 'music'}", "music.local_bonus=0.5"])
    engine = Engine(EmotionRecognizer(model, make_detector("haar")), Recommender.from_config(cfg))
    private = tmp_path / "private.png"
    private.write_bytes(encode(FACE))
    as_file = {"path": str(private), "meta": {"_type": "gradio.FileData"}, "orig_name": "private.png"}
    with TestClient(page_app(cfg, engine=lambda: engine)) as client:
        for api_name, picture in [("live", {"path": str(private)}), ("snapshot", {"path": str(private)})]:
            message = run_event(client, api_name, picture)
            assert not message["success"] and "not uploaded to this page" in json.dumps(message)
        assert not run_event(client, "snapshot", as_file)[
            "success"
        ]  # Gradio's check: its message is not shown
        assert private.read_bytes() == encode(FACE)
        assert not list((tmp_path / "gradio").rglob("private.png"))  # not copied into Gradio's folder either

        uploaded = client.post("/gradio_api/upload", files={"files": ("face.png", encode(FACE), "image/png")})
        path = uploaded.json()[0]
        message = run_event(client, "snapshot", {**as_file, "path": path, "orig_name": "face.png"})
    assert message["success"] and "This picture looks happy" in json.dumps(message)
    assert not Path(path).exists()
    audio = [o for o in message["output"]["data"] if isinstance(o, dict) and o.get("__type__") == "update"]
    assert any(str(o.get("value", {}).get("path", "")).endswith("sunny.wav") for o in audio), audio
