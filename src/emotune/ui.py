"""The page: the webcam (or a photo) -> faces and their emotions -> a smoothed mood -> a playlist that plays.

    bentoml serve            # http://127.0.0.1:3000/ui/  (emotune.service mounts `page_app()`)
    emotune ui               # http://127.0.0.1:7860/     (the same page on its own, see ui_commands.py)

Live mode streams webcam frames (JPEG data URLs, decoded in memory) to `Page.live`, which finds the faces,
classifies them in one batch, draws them on a copy of the frame and feeds the chosen face's probabilities to
the viewer's `MoodSmoother` (emotune.mood). The playlist is made only when the smoothed mood (or the
strategy) changes. Photo mode analyses one uploaded picture and sets the mood at once.

Music: local files play in a gr.Audio; a track with a Spotify id plays in Spotify's embedded player, which
PLAYER_JS (in the page's head) drives through Spotify's iFrame API: it loads the API's script only when such a
track first comes up (until then the page loads nothing from elsewhere), loads each next track into the same
player, and tells the server when a track plays, pauses or ends (hidden buttons), so the list advances by
itself. Without the internet the page says so in one line and how to play a music folder instead. "This song
feels…" writes the music folder's sidecar (emotune.music.library.set_sidecar_mood) and reloads the music.

Privacy: camera frames never touch the disk. Live frames arrive as data URLs and the annotated frame goes
back as a data URL inside HTML (a gr.Image output would be saved to Gradio's cache). The camera is offered
only there: a picture taken in a non-streaming gr.Image is uploaded to Gradio's temporary folder, so the Photo
input takes files only; their upload lands in that folder and the page reads it into memory and deletes it
at once.

State is per browser session (gr.State holds a `Viewer`). Errors never reach the page as stack traces: they
are logged and the page shows a short message.
"""

from __future__ import annotations

import base64
import contextlib
import html
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import gradio as gr
import numpy as np
from fastapi import FastAPI
from gradio.utils import get_upload_folder
from omegaconf import DictConfig

from emotune.calibration import CALIBRATED, Calibration, resting_summary
from emotune.http_guard import UploadGuard
from emotune.labels import EMOTIONS
from emotune.mood import FACE_RULES, MoodReading, MoodSmoother, Smoothing, select_mood, selected_faces
from emotune.music import STRATEGIES, CatalogError, ListeningSession, Recommendation
from emotune.music.library import SIDECAR_NAME, set_sidecar_mood
from emotune.music.recommender import resolve_path
from emotune.serving import load_recommender
from emotune.timeline import MoodTimeline, describe, snapshot_link
from emotune.vision import ImageError, decode_image, open_image

log = logging.getLogger(__name__)

# Box and label colours (RGB), one per emotion, readable with white text.
COLORS = {
    "angry": (220, 38, 38),
    "disgust": (101, 163, 13),
    "fear": (124, 58, 237),
    "happy": (234, 138, 0),
    "sad": (37, 99, 235),
    "surprise": (219, 39, 119),
    "neutral": (71, 85, 105),
}
VIEW_MAX_SIDE = 960  # the annotated picture is drawn at most this large (big photos are scaled down)
NO_FACE = "No face yet — look at the camera"
NOT_CALIBRATED = "Reads moods as the model sees faces. Relax your face and press Calibrate to read yours."
FRIENDLY_ERROR = "Something went wrong with that picture. Please try again."
MAX_UNPLACED_CHOICES = 500  # "this song feels…" lists at most this many files without a mood (filterable)

# Spotify's embedded player, driven by its iFrame API (developer.spotify.com/documentation/embeds). The
# script comes from Spotify only once a track with a Spotify id is up to play; it replaces #et-spotify-embed
# with Spotify's player (an iframe from open.spotify.com), into which the page loads each next track.
SPOTIFY_API = "https://open.spotify.com/embed/iframe-api/v1"
SPOTIFY_WAIT_MS = 20_000  # the script arrived but the API never said it was ready: as good as offline
OFFLINE_HINT = (
    "Spotify previews need the internet. To play your own music here: "
    "<code>make serve MUSIC=~/Music</code> or <code>emotune serve --music-dir PATH</code>."
)
SPOTIFY_BOX = (
    '<div class="et-card et-spotify" hidden><div id="et-spotify-embed"></div>'
    f'<div class="et-offline" hidden>{OFFLINE_HINT}</div></div>'
)
# The player's logic, in the page's head. It watches the now-playing card: a card with data-kind="spotify"
# names the track (data-uri) to play. The first such card adds the API's script; when that fails (offline) the
# page shows OFFLINE_HINT and never asks again: one failed request, not one per track. The player reports
# playing / paused / ended through hidden buttons (#spotify-*) to Page.playing / paused / ended.
PLAYER_JS = """<script>
(() => {
  const API = "SPOTIFY_API", WAIT_MS = SPOTIFY_WAIT_MS;
  let state = "idle", api = null, controller = null, creating = false;
  let current = null, playing = false, heard = false;
  const $ = (selector) => document.querySelector(selector);
  const press = (id) => $("#" + id)?.click();
  function wanted() {
    const card = $("#now-playing .et-now");
    return card && card.dataset.kind === "spotify" ? card.dataset.uri || null : null;
  }
  function update(event) {
    const d = (event && event.data) || {};
    if (!d.isPaused) {
      if (d.position > 0) heard = true;
      if (!playing) { playing = true; press("spotify-playing"); }
      return;
    }
    if (!playing) return;
    playing = false;
    // Paused at the end of a track that was heard (or back at its start): it ended.
    const ended = heard && d.duration > 0 && (d.position === 0 || d.position >= d.duration - 1000);
    heard = false;
    press(ended ? "spotify-ended" : "spotify-paused");
  }
  function create() {
    const uri = current;
    creating = true;
    api.createController($("#et-spotify-embed"), {uri: uri, width: "100%", height: 80}, (c) => {
      controller = c;
      c.addListener("playback_update", update);
      c.addListener("ready", () => { if (current === uri) c.play(); });
      if (current && current !== uri) { c.loadUri(current); c.play(); }
    });
  }
  function failed() {
    if (state !== "loading") return;
    state = "failed";
    sync();
  }
  function load() {
    state = "loading";
    window.onSpotifyIframeApiReady = (IFrameAPI) => {
      if (state !== "loading") return;
      state = "ready";
      api = IFrameAPI;
      if (current) create();
    };
    const script = document.createElement("script");
    script.src = API;
    script.async = true;
    script.onerror = failed;
    document.body.appendChild(script);
    setTimeout(failed, WAIT_MS);
  }
  function sync() {
    const box = $("#spotify .et-spotify");
    if (!box) return;
    const uri = wanted();
    box.hidden = !uri;
    box.querySelector(".et-offline").hidden = state !== "failed";
    if (uri === current) return;
    current = uri;
    heard = false;
    if (playing) { playing = false; press("spotify-paused"); }  // the player moved on from it
    if (!uri) { if (controller) controller.pause(); return; }
    if (state === "idle") load();
    else if (controller) { controller.loadUri(uri); controller.play(); }
    else if (api && !creating) create();
  }
  const start = () => new MutationObserver(sync).observe(document.body, {childList: true, subtree: true});
  if (document.body) start(); else document.addEventListener("DOMContentLoaded", start);
})();
</script>""".replace("SPOTIFY_API", SPOTIFY_API).replace("SPOTIFY_WAIT_MS", str(SPOTIFY_WAIT_MS))

# System fonts only: the page must not fetch fonts from anywhere (offline, and no third-party requests).
FONTS = ["ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "Roboto", "Helvetica Neue", "sans-serif"]
MONO = ["ui-monospace", "SFMono-Regular", "Menlo", "Consolas", "monospace"]


def theme() -> gr.themes.Base:
    return gr.themes.Soft(
        primary_hue="violet", secondary_hue="sky", neutral_hue="slate", font=FONTS, font_mono=MONO
    )


CSS = """
.gradio-container { max-width: 1280px !important; margin: 0 auto; }
.et-header { display: flex; align-items: center; gap: .6rem; padding: .25rem 0 .4rem; }
.et-header h1 { margin: 0; font-size: 1.6rem; font-weight: 700; letter-spacing: -.02em; }
.et-header p { margin: 0 0 0 .5rem; color: var(--body-text-color-subdued); }
.et-card { border-radius: var(--radius-lg); background: var(--block-background-fill);
  border: 1px solid var(--block-border-color); box-shadow: var(--block-shadow); padding: .7rem .9rem; }
.et-face { flex: none; display: inline-block; }
.et-face .et-line { stroke: var(--body-text-color); }
.et-face .et-dot { fill: var(--body-text-color); }
.et-view { display: flex; align-items: center; justify-content: center; min-height: 260px; padding: 0;
  overflow: hidden; }
.et-view img { display: block; width: 100%; height: auto; max-height: 520px; object-fit: contain; }
.et-empty { color: var(--body-text-color-subdued); text-align: center; padding: 2rem; line-height: 1.5; }
.et-empty .et-face { display: block; margin: 0 auto .5rem; opacity: .8; }
.et-timeline { width: 100%; height: auto; display: block; margin: .3rem 0; }
.et-timeline text { font-size: 12px; fill: var(--body-text-color-subdued); }
.et-calibration { color: var(--body-text-color-subdued); font-size: .85rem; align-self: center; }
.et-calibration[data-state="calibrated"] { color: var(--body-text-color); }
.et-mood { display: flex; align-items: center; gap: 1rem; border-left: 6px solid var(--et-accent, #94a3b8); }
.et-mood .et-name { font-size: 1.5rem; font-weight: 700; text-transform: capitalize; }
.et-mood .et-status { color: var(--body-text-color-subdued); font-size: .92rem; }
.et-mood .et-meta { color: var(--body-text-color-subdued); font-size: .8rem; margin-top: .15rem; }
.et-bars-empty { color: var(--body-text-color-subdued); font-size: .9rem; }
.et-bar { display: grid; grid-template-columns: 4.6rem 1fr 2.6rem; align-items: center; gap: .5rem;
  font-size: .85rem; line-height: 1.55; }
.et-bar-name { color: var(--body-text-color-subdued); }
.et-bar-mood .et-bar-name, .et-bar-mood .et-bar-value { color: var(--body-text-color); font-weight: 700; }
.et-bar-track { height: .55rem; border-radius: 999px; overflow: hidden;
  background: var(--border-color-primary); }
.et-bar-fill { display: block; height: 100%; border-radius: 999px; transition: width .25s ease-out; }
.et-bar-value { text-align: right; font-variant-numeric: tabular-nums;
  color: var(--body-text-color-subdued); }
.et-playlist h3 { margin: .1rem 0 .5rem; font-size: 1rem; display: flex; align-items: center; gap: .4rem; }
.et-playlist ol { margin: 0; padding-left: 1.6rem; max-height: 320px; overflow-y: auto; }
.et-playlist li { padding: .2rem 0; line-height: 1.35; }
.et-playlist li.et-current { font-weight: 700; }
.et-playlist li.et-current::marker { color: var(--color-accent); }
.et-playlist .et-artist { color: var(--body-text-color-subdued); font-weight: 400; }
.et-muted { color: var(--body-text-color-subdued); }
.et-badge { font-size: .72rem; padding: .05rem .45rem; border-radius: 999px; margin-left: .35rem;
  border: 1px solid var(--border-color-primary); text-decoration: none; white-space: nowrap;
  color: var(--body-text-color-subdued); font-weight: 400; }
.et-now .et-label { font-size: .72rem; text-transform: uppercase; letter-spacing: .06em;
  color: var(--body-text-color-subdued); }
.et-now .et-track { font-weight: 700; font-size: 1.05rem; }
.et-now iframe { width: 100%; height: 80px; border: 0; border-radius: 12px; margin-top: .4rem; }
.et-link { display: inline-block; margin-top: .3rem; }
.et-spotify[hidden], .et-offline[hidden] { display: none !important; }
.et-spotify iframe { display: block; width: 100%; border: 0; border-radius: 12px; }
.et-offline { color: var(--body-text-color-subdued); font-size: .85rem; }
.et-feels-note { color: var(--body-text-color-subdued); font-size: .85rem; }
"""


# ------------------------------------------------------------------------------------------- state


@dataclass
class Viewer:
    """One browser session's state (held by gr.State): its smoothed mood, playlist and player."""

    smoother: MoodSmoother
    listening: ListeningSession
    playlist: list[Recommendation] = field(default_factory=list)
    made_for: tuple[str, str] | None = None  # the (mood, strategy) the playlist was made for
    position: int = -1  # the player's index in the playlist; -1: its track is from an earlier list
    current: Recommendation | None = None  # the track in the player
    playing: bool = False  # a local track is playing (the browser tells us: play/pause events)
    seed: int = 0  # a fresh seed per playlist: coming back to a mood gives a fresh list
    pictures: int = 0  # snapshots handled: a new count clears the snapshot input (build_page)
    last_ms: float | None = None  # time to analyse the last frame
    calibration: Calibration | None = None  # the resting face (Live tab), made on first use
    timeline: MoodTimeline = field(default_factory=MoodTimeline)
    timeline_drawn: float | None = None  # when the chart was last sent to the page

    def select(self, index: int) -> Recommendation | None:
        if not self.playlist:
            return None
        self.position = min(max(index, 0), len(self.playlist) - 1)
        self.current = self.playlist[self.position]
        self.listening.played(self.current)
        return self.current


class Engine:
    """What the page needs from a running service: `recognizer`, `recommender` (or None), `music_status`."""

    def __init__(self, recognizer: Any, recommender: Any | None, music_status: str = "ok") -> None:
        self.recognizer, self.recommender, self.music_status = recognizer, recommender, music_status

    @classmethod
    def from_config(cls, cfg: DictConfig, model: str | None = None) -> Engine:
        from emotune.recognizer import EmotionRecognizer
        from emotune.serving import load_recommender

        recommender, status = load_recommender(cfg)
        recognizer = EmotionRecognizer.from_config(cfg.serve, model, "--model" if model else None)
        return cls(recognizer, recommender, status)


def current_service() -> Any:
    """The BentoML service instance of this worker (it has .recognizer, .recommender, .music_status)."""
    import bentoml

    service = bentoml.get_current_service()
    if service is None or not hasattr(service, "recognizer"):
        raise RuntimeError("the emotune service is not running in this process")
    return service


# ------------------------------------------------------------------------------------------- drawing


def _jpeg_data_url(rgb: np.ndarray, quality: int = 82) -> str:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("could not encode the annotated frame")
    return "data:image/jpeg;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def annotate(
    frame: np.ndarray, faces: list[Any], chosen: list[int], max_side: int = VIEW_MAX_SIDE
) -> np.ndarray:
    """A copy of the frame (scaled to fit max_side) with each face's box and "emotion NN%" label; the faces
    that make the mood get a thicker box."""
    rgb = frame if frame.ndim == 3 else cv2.cvtColor(frame, cv2.COLOR_GRAY2RGB)
    rgb = np.ascontiguousarray(rgb[..., :3])
    height, width = rgb.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    out = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb.copy()
    side = min(out.shape[:2])
    thin = max(2, round(side / 240))
    font_scale = max(0.5, side / 700)
    for i, face in enumerate(faces):
        x, y, w, h = (round(v * scale) for v in face.box)
        color = COLORS[face.emotion]
        cv2.rectangle(out, (x, y), (x + w, y + h), color, thin * 2 if i in chosen else thin, cv2.LINE_AA)
        text = f"{face.emotion} {float(np.max(face.probabilities)):.0%}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, thin // 2 + 1)
        pad = thin + 2
        top = y - th - base - 2 * pad if y - th - base - 2 * pad >= 0 else y + h  # above, or below the box
        cv2.rectangle(out, (x, top), (x + tw + 2 * pad, top + th + base + 2 * pad), color, -1)
        cv2.putText(
            out,
            text,
            (x + pad, top + pad + th),
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (255, 255, 255),
            thin // 2 + 1,
            cv2.LINE_AA,
        )
    return out


def view_html(annotated: np.ndarray | None, faces: int = 0) -> str:
    if annotated is None:
        return (
            f'<div class="et-card et-view"><div class="et-empty">{face_svg(None, 64)}'
            "Press the record button on the camera to start, or switch to <b>Photo</b> to use a picture."
            "<br>What emotune sees appears here.</div></div>"
        )
    alt = f"the picture with {faces} face(s) marked" if faces else "the picture: no face found"
    return f'<div class="et-card et-view"><img alt="{alt}" src="{_jpeg_data_url(annotated)}"></div>'


def _hex(mood: str | None) -> str:
    return "#{:02x}{:02x}{:02x}".format(*COLORS[mood]) if mood else "#94a3b8"


# A drawn face per mood (56x56): brows, eyes and mouth as SVG paths. Emoji would depend on the viewer's fonts.
_FACE_PARTS = {
    "angry": ("M14 17 L24 21 M42 17 L32 21", 2.6, "M18 42 Q28 35 38 42"),
    "disgust": ("M14 19 L24 19 M32 17 L42 20", 2.6, "M17 40 Q24 35 30 40 T39 37"),
    "fear": ("M14 19 L24 15 M32 15 L42 19", 3.4, "M18 41 q2.5 -3 5 0 t5 0 t5 0 t5 0"),
    "happy": ("", 2.6, "M17 35 Q28 47 39 35"),
    "sad": ("M14 17 L24 14 M32 14 L42 17", 2.6, "M18 43 Q28 34 38 43"),
    "surprise": ("M14 16 Q19 11 24 15 M32 15 Q37 11 42 16", 3.6, None),
    "neutral": ("", 2.6, "M19 39 L37 39"),
}


_ROUND = 'stroke-linecap="round"'


def face_svg(mood: str | None, size: int = 56) -> str:
    brows, eye, mouth = _FACE_PARTS.get(mood or "", ("", 2.6, "M20 39 Q28 42 36 39"))
    color = _hex(mood)
    mouth_svg = (
        f'<path class="et-line" d="{mouth}" fill="none" stroke="#1e293b" stroke-width="2.6" {_ROUND}/>'
        if mouth
        else '<ellipse class="et-dot" cx="28" cy="40" rx="5" ry="6.5" fill="#1e293b"/>'
    )
    brows_svg = (
        f'<path class="et-line" d="{brows}" fill="none" stroke="#1e293b" stroke-width="2.4" {_ROUND}/>'
        if brows
        else ""
    )
    return (
        f'<svg class="et-face" width="{size}" height="{size}" viewBox="0 0 56 56" aria-hidden="true">'
        f'<circle cx="28" cy="28" r="26" fill="{color}" fill-opacity=".18" stroke="{color}" '
        'stroke-width="2.5"/>'
        f'{brows_svg}<circle class="et-dot" cx="20" cy="25" r="{eye}" fill="#1e293b"/>'
        f'<circle class="et-dot" cx="36" cy="25" r="{eye}" fill="#1e293b"/>{mouth_svg}</svg>'
    )


def mood_html(mood: str | None, status: str, meta: str = "") -> str:
    name = html.escape(mood) if mood else "Waiting for a face"
    meta_html = f'<div class="et-meta">{html.escape(meta)}</div>' if meta else ""
    return (
        f'<div class="et-card et-mood" style="--et-accent:{_hex(mood)}" data-mood="{mood or ""}">'
        f'{face_svg(mood)}<div><div class="et-name">{name}</div>'
        f'<div class="et-status">{html.escape(status)}</div>{meta_html}</div></div>'
    )


def bars_html(probabilities: np.ndarray | None, mood: str | None = None) -> str:
    """The 7 smoothed probabilities as bars, always in the same order (a live chart must not reshuffle)."""
    if probabilities is None:
        return (
            '<div class="et-card et-bars et-bars-empty">The mood mix appears here once a face is found.</div>'
        )
    rows = "".join(
        f'<div class="et-bar{" et-bar-mood" if name == mood else ""}" data-emotion="{name}">'
        f'<span class="et-bar-name">{name}</span><span class="et-bar-track"><span class="et-bar-fill" '
        f'style="width:{100 * float(p):.1f}%;background:{_hex(name)}"></span></span>'
        f'<span class="et-bar-value">{100 * float(p):.0f}%</span></div>'
        for name, p in zip(EMOTIONS, probabilities, strict=True)
    )
    return f'<div class="et-card et-bars" role="img" aria-label="emotion probabilities">{rows}</div>'


def mood_reading(analysis: Any, rule: str) -> np.ndarray | None:
    """The frame's mood probabilities under the face rule (None without a face)."""
    return select_mood([f.box for f in analysis.faces], [f.probabilities for f in analysis.faces], rule)


def calibration_html(message: str, calibrated: bool = False) -> str:
    state = "calibrated" if calibrated else "plain"
    return f'<div class="et-calibration" data-state="{state}">{html.escape(message)}</div>'


def timeline_html(timeline: MoodTimeline) -> str:
    spent = describe(timeline.points)
    summary = " · ".join(
        f"{mood} {seconds / 60:.1f} min" for mood, seconds in sorted(spent.items(), key=lambda kv: -kv[1])
    )
    footer = f'<div class="et-meta">{html.escape(summary)}</div>{snapshot_link(timeline)}' if spent else ""
    return (
        '<div class="et-card et-timeline-card"><span class="et-label">Your mood, the last minutes</span>'
        f"{timeline.svg({e: _hex(e) for e in EMOTIONS})}{footer}</div>"
    )


def _badge(track: Recommendation) -> str:
    play = track.play
    if play.kind == "local":
        return '<span class="et-badge" title="plays here">▶ here</span>'
    label = "Spotify ↗" if play.kind == "spotify" else "Search ↗"
    return (
        f'<a class="et-badge" href="{html.escape(play.url)}" target="_blank" rel="noopener noreferrer" '
        f'title="open in Spotify">{label}</a>'
    )


def playlist_html(viewer: Viewer, music_status: str = "ok") -> str:
    if music_status != "ok":
        return (
            f'<div class="et-card et-playlist"><h3>Music is unavailable</h3>{html.escape(music_status)}</div>'
        )
    if viewer.made_for is None:
        return (
            '<div class="et-card et-playlist et-empty-list"><h3>Your playlist</h3>'
            '<span class="et-muted">It appears as soon as emotune has read your mood.</span></div>'
        )
    mood, strategy = viewer.made_for
    if not viewer.playlist:
        return f'<div class="et-card et-playlist"><h3>No tracks left for {html.escape(mood)}</h3></div>'
    items = "".join(
        f'<li class="{"et-current" if i == viewer.position else ""}" data-kind="{t.play.kind}">'
        f'{html.escape(t.name)} <span class="et-artist">— {html.escape(t.artist)}</span>{_badge(t)}</li>'
        for i, t in enumerate(viewer.playlist)
    )
    how = "to match" if strategy == "match" else "to lift"
    return (
        f'<div class="et-card et-playlist" data-mood="{mood}" data-strategy="{strategy}">'
        f"<h3>{face_svg(mood, 22)} {len(viewer.playlist)} tracks {how} a {html.escape(mood)} mood</h3>"
        f"<ol>{items}</ol></div>"
    )


def now_playing_html(viewer: Viewer) -> str:
    track = viewer.current
    if track is None:
        return (
            '<div class="et-card et-now"><span class="et-label">Now playing</span>'
            '<div class="et-muted">Nothing yet.</div></div>'
        )
    title = f'<div class="et-track">{html.escape(track.name)}</div><div>{html.escape(track.artist)}</div>'
    play = track.play
    extra, uri = "", ""
    if play.kind == "spotify" and play.spotify_uri:
        uri = f' data-uri="{html.escape(play.spotify_uri)}"'  # PLAYER_JS plays it in the box below
    elif play.kind != "local":
        extra = (
            f'<a class="et-link" href="{html.escape(play.url)}" target="_blank" rel="noopener noreferrer">'
            "Find it on Spotify ↗</a>"
        )
    where = "Playing here" if play.kind == "local" else "Up now"
    label = f'<span class="et-label">{where}</span>'
    return f'<div class="et-card et-now" data-kind="{play.kind}"{uri}>{label}{title}{extra}</div>'


def feels_html(message: str) -> str:
    return f'<div class="et-feels-note">{html.escape(message)}</div>'


def audio_update(viewer: Viewer) -> Any:
    track = viewer.current
    if track is not None and track.play.kind == "local" and track.play.path:
        return gr.Audio(value=track.play.path, visible=True, label=f"{track.artist} — {track.name}")
    return gr.Audio(value=None, visible=False)


# ------------------------------------------------------------------------------------------- the page


def uploaded_file(path: str) -> Path:
    """`path` when it names a file in Gradio's upload folder, else a gr.Error. The client names a picture
    input's file by its path, and the page reads and then deletes that file: a path that Gradio did not
    store (a bare {"path": ...} skips Gradio's own check) must never reach a read or an unlink."""
    folder = Path(get_upload_folder()).resolve()
    resolved = Path(path).resolve()  # symbolic links and ".." resolved: the file that would be touched
    if resolved == folder or not resolved.is_relative_to(folder) or not resolved.is_file():
        raise gr.Error("That file can't be used: it was not uploaded to this page")
    return resolved


def _unopened_upload(payload: Any) -> str | None:
    """Replaces gr.Image.preprocess on the snapshot input: the handler gets the uploaded file's path
    unopened, decodes it itself (size limits, EXIF, a clear message for a file that is not a picture; plain
    gr.Image would open it first and fail with a bare "Error") and deletes it. (A gr.Image subclass would do
    the same, but Gradio writes a .pyi stub beside the module of every component class it sees.) Never send
    the snapshot input a gr.skip()/update: Gradio would rebuild it for the session without this override."""
    return None if payload is None or not payload.path else str(uploaded_file(payload.path))


def frame_reader(max_bytes: int, max_pixels: int) -> Callable[[Any], np.ndarray | None]:
    """Replaces gr.Image.preprocess on the camera: a frame (a JPEG data URL from the page) is decoded by
    emotune.vision.decode_image within the image limits, where Gradio would decode whatever it is sent up to
    Pillow's own bomb limit (~180 Mpx, half a gigabyte of pixels)."""

    def read(payload: Any) -> np.ndarray | None:
        if payload is None:
            return None
        url = payload.url or ""
        if url.startswith("data:"):
            encoded = url.partition(",")[2]
            if len(encoded) > 4 * (max_bytes // 3 + 1):  # base64: 4 characters per 3 bytes
                raise gr.Error(f"That frame can't be used: over {max_bytes:,} bytes (serve.max_image_bytes)")
            data = base64.b64decode(encoded)
        elif payload.path:  # a file sent through the upload route (not the page's camera): read, then gone
            path = uploaded_file(payload.path)
            try:
                data = path.read_bytes()
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)
        else:
            return None
        try:
            return decode_image(data, max_bytes, max_pixels)
        except ImageError as err:
            raise gr.Error(f"That frame can't be used: {err}") from None

    return read


def _cleared() -> None:
    return None  # a value for the snapshot input (see _unopened_upload): empty, ready for the next picture


class Page:
    """The handlers, bound to an engine source (the BentoML service, or an Engine for `emotune ui`)."""

    def __init__(
        self, engine: Callable[[], Any], cfg: DictConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.engine = engine
        self.cfg = cfg
        library = cfg.music.get("library_dir")
        self.library = resolve_path(library).expanduser().resolve() if library else None
        self.clock = clock  # seconds, monotonic: the smoothing's and the calibration's time
        self.smoothing = Smoothing.from_config(cfg.ui.get("smoothing"))
        self.k = int(cfg.ui.get("k") or cfg.music.k)
        self.recent = int(cfg.music.get("recent_exclude", 20))
        self.max_bytes = int(cfg.serve.max_image_bytes)
        self.max_pixels = int(cfg.serve.max_image_pixels)
        self.calibration_options = dict(cfg.ui.get("calibration") or {})
        timeline = dict(cfg.ui.get("timeline") or {})
        self.timeline_refresh_s = float(timeline.pop("refresh_s", 2.0))
        self.timeline_options = timeline

    def new_viewer(self) -> Viewer:
        return Viewer(
            MoodSmoother(self.smoothing),
            ListeningSession(self.recent),
            timeline=MoodTimeline(**self.timeline_options),
        )

    def _timeline(self, viewer: Viewer, reading: MoodReading, now: float) -> Any:
        """A point per `every_s`; the chart when a point was added and `refresh_s` has passed, else skip."""
        track = f"{viewer.current.name} — {viewer.current.artist}" if viewer.current else None
        if not viewer.timeline.add(now, reading.mood, reading.probabilities, track):
            return gr.skip()
        if viewer.timeline_drawn is not None and now - viewer.timeline_drawn < self.timeline_refresh_s:
            return gr.skip()
        viewer.timeline_drawn = now
        return timeline_html(viewer.timeline)

    # -- music

    def _refresh_playlist(self, viewer: Viewer, strategy: str) -> bool:
        """A new playlist when the smoothed mood or the strategy changed; True when it did."""
        mood = viewer.smoother.mood
        if mood is None or viewer.made_for == (mood, strategy):
            return False
        engine = self.engine()
        if engine.recommender is None:
            viewer.made_for = (mood, strategy)
            return True
        ema = viewer.smoother.ema
        tracks = engine.recommender.recommend(
            ema if ema is not None else mood,
            strategy=strategy,
            k=self.k,
            exclude=viewer.listening.recent,
            seed=viewer.seed,
        )
        viewer.seed += 1
        viewer.playlist, viewer.made_for = tracks, (mood, strategy)
        if viewer.playing and viewer.current is not None:
            viewer.position = -1  # let the playing song finish; the new list starts after it
        else:
            viewer.select(0)
        return True

    def _music(self, viewer: Viewer, changed: bool, player: bool | None = None) -> tuple[Any, Any, Any]:
        """(playlist, now playing, audio) updates; gr.skip() leaves a component (and its audio) alone."""
        if not changed:
            return gr.skip(), gr.skip(), gr.skip()
        player = (viewer.position >= 0 or viewer.current is None) if player is None else player
        status = self.engine().music_status
        if not player:
            return playlist_html(viewer, status), gr.skip(), gr.skip()
        return playlist_html(viewer, status), now_playing_html(viewer), audio_update(viewer)

    # -- frames

    def _analyze(self, frame: np.ndarray, rule: str) -> tuple[Any, list[int], np.ndarray | None]:
        analysis = self.engine().recognizer.analyze(frame)
        return analysis, selected_faces([f.box for f in analysis.faces], rule), mood_reading(analysis, rule)

    # -- calibration (Live tab)

    def _calibration(self, viewer: Viewer) -> Calibration:
        if viewer.calibration is None:
            viewer.calibration = Calibration(self.engine().recognizer.neutral, **self.calibration_options)
        return viewer.calibration

    def _calibration_state(self, calibration: Calibration, message: str | None = None) -> str:
        if calibration.active:
            return calibration_html(
                f"Calibrating: relax your face and look at the camera for {calibration.seconds:g} s…"
            )
        if calibration.resting is None:
            return calibration_html(message or NOT_CALIBRATED)
        prefix = f"{message}. " if message and message != CALIBRATED else ""
        return calibration_html(
            f"{prefix}{CALIBRATED} (it read {resting_summary(calibration.resting)}); "
            "moods are read relative to it · Reset to undo",
            calibrated=True,
        )

    def calibrate(self, viewer: Viewer) -> str:
        calibration = self._calibration(viewer)
        calibration.start(self.clock())
        return self._calibration_state(calibration)

    def reset_calibration(self, viewer: Viewer) -> str:
        calibration = self._calibration(viewer)
        calibration.reset()
        viewer.smoother.reset()  # the mood so far was read the other way
        return self._calibration_state(calibration)

    def _status(self, viewer: Viewer, reading: MoodReading, faces: int, rule: str) -> tuple[str, str]:
        if not reading.face:
            if reading.mood is None:
                return NO_FACE, ""
            return f"No face in view — keeping your {reading.mood} playlist", ""
        if faces == 0:
            status = "Looking for your face…"
        elif reading.mood is None:
            status = "Reading your expression…"
        elif reading.challenger:
            status = f"Looks {reading.challenger} — waiting to be sure"
        else:
            status = "Your mood right now: the playlist follows it"
        who = ("the largest face" if rule == "largest" else "the average of all faces") if faces > 1 else ""
        meta = f"{faces} face{'s' if faces != 1 else ''}" + (f" · mood from {who}" if who else "")
        if viewer.last_ms is not None:
            meta += f" · analysed in {viewer.last_ms:.0f} ms"
        return status, meta

    def live(self, frame: np.ndarray | None, rule: str, strategy: str, viewer: Viewer) -> tuple[Any, ...]:
        """One webcam frame -> (view, probabilities, mood, playlist, now playing, audio)."""
        if frame is None:
            return (gr.skip(),) * 8
        try:
            start = time.perf_counter()
            analysis, chosen, probs = self._analyze(frame, rule)
            now, calibration, calibration_out = self.clock(), viewer.calibration, gr.skip()
            if calibration is not None and calibration.active:  # it collects the model's own readings
                finished = calibration.add(probs, now)
                if finished is not None:
                    if calibration.resting is not None:
                        viewer.smoother.reset()  # from now on readings are relative to the resting face
                    calibration_out = self._calibration_state(calibration, finished)
            if calibration is not None and calibration.resting is not None:
                analysis = analysis.relative_to(calibration.resting, calibration.neutral)
                probs = mood_reading(analysis, rule)
            reading = viewer.smoother.update(probs, now)
            view = view_html(annotate(frame, analysis.faces, chosen), len(analysis.faces))
            viewer.last_ms = (time.perf_counter() - start) * 1000
            changed = self._refresh_playlist(viewer, strategy)
            status, meta = self._status(viewer, reading, len(analysis.faces), rule)
            # Without a face the bars keep the last mix rather than going blank.
            bars = (
                gr.skip() if reading.probabilities is None else bars_html(reading.probabilities, reading.mood)
            )
            mood = mood_html(reading.mood, status, meta)
            music = self._music(viewer, changed)
            return (view, bars, mood, *music, calibration_out, self._timeline(viewer, reading, now))
        except Exception:
            log.exception("the page could not analyse a webcam frame")
            return (gr.skip(), gr.skip(), mood_html(viewer.smoother.mood, FRIENDLY_ERROR), *(gr.skip(),) * 5)

    def snapshot(self, path: str | None, rule: str, strategy: str, viewer: Viewer) -> tuple[Any, ...]:
        """One uploaded/taken picture -> (view, probabilities, mood, playlist, now, audio, pictures). The
        last output counts the pictures this session handled; its change clears the input (build_page)."""
        if not path:
            return (gr.skip(),) * 7  # the input was cleared: nothing to do, and nothing to clear again
        viewer.pictures += 1
        return (*self._picture(path, rule, strategy, viewer), viewer.pictures)

    def _picture(self, path: str, rule: str, strategy: str, viewer: Viewer) -> tuple[Any, ...]:
        try:
            try:
                data = Path(path).read_bytes()
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(path)  # the picture lives on in memory only
            frame = decode_image(data, self.max_bytes, self.max_pixels)
            start = time.perf_counter()
            analysis, chosen, probs = self._analyze(frame, rule)  # a photo may be anyone: not calibrated
            viewer.last_ms = (time.perf_counter() - start) * 1000
            view = view_html(annotate(frame, analysis.faces, chosen), len(analysis.faces))
            if probs is None:
                status = "No face found in this picture — try one with a clear, front-facing face"
                reading = viewer.smoother.update(None, self.clock())
                return (view, gr.skip(), mood_html(reading.mood, status), *(gr.skip(),) * 3)
            reading = viewer.smoother.set(probs, self.clock())
            changed = self._refresh_playlist(viewer, strategy)
            _, meta = self._status(viewer, reading, len(analysis.faces), rule)
            status = f"This picture looks {reading.mood}"
            return (
                view,
                bars_html(reading.probabilities, reading.mood),
                mood_html(reading.mood, status, meta),
                *self._music(viewer, changed),
            )
        except ImageError as err:
            log.info("snapshot refused: %s", err)
            message = f"That file can't be used: {err}"
            return (gr.skip(), gr.skip(), mood_html(viewer.smoother.mood, message), *(gr.skip(),) * 3)
        except Exception:
            log.exception("the page could not analyse a snapshot")
            return (
                gr.skip(),
                gr.skip(),
                mood_html(viewer.smoother.mood, FRIENDLY_ERROR),
                *(gr.skip(),) * 3,
            )

    # -- player

    def strategy_changed(self, strategy: str, viewer: Viewer) -> tuple[Any, Any, Any]:
        try:
            return self._music(viewer, self._refresh_playlist(viewer, strategy))
        except Exception:
            log.exception("the page could not make a playlist")
            return gr.skip(), gr.skip(), gr.skip()

    def step(self, viewer: Viewer, delta: int) -> tuple[Any, Any, Any]:
        if not viewer.playlist:
            return gr.skip(), gr.skip(), gr.skip()
        viewer.select(viewer.position + delta if viewer.position >= 0 else 0)
        return self._music(viewer, True, player=True)

    def ended(self, viewer: Viewer) -> tuple[Any, Any, Any]:
        """Auto-advance: the next track of the current list (the first of a new list) when a song ends."""
        viewer.playing = False
        if viewer.position + 1 >= len(viewer.playlist):
            return gr.skip(), gr.skip(), gr.skip()
        return self.step(viewer, 1)

    def previous(self, viewer: Viewer) -> tuple[Any, Any, Any]:
        return self.step(viewer, -1)

    def next(self, viewer: Viewer) -> tuple[Any, Any, Any]:
        return self.step(viewer, 1)

    def playing(self, viewer: Viewer) -> None:
        viewer.playing = True

    def paused(self, viewer: Viewer) -> None:
        viewer.playing = False

    # -- "this song feels…": a mood for a file of the music folder

    def _placeable(self, viewer: Viewer) -> dict[str, str]:
        """The files this listener may give a mood, {path relative to the music folder: label}: the track in
        the player when it is a library file placed by its folder, genre or the sidecar (a file that matched a
        catalogue track plays as that track), then the files without a mood. Only these are ever written."""
        if self.library is None:
            return {}
        choices: dict[str, str] = {}
        track = viewer.current
        if track is not None and track.source == "library" and track.play.path:
            with contextlib.suppress(ValueError):
                relative = Path(track.play.path).relative_to(self.library).as_posix()
                choices[relative] = f"{track.name} — {track.artist} (now)"
        recommender = self.engine().recommender
        unplaced = recommender.library.get("unplaced", []) if recommender is not None else []
        for path in unplaced[:MAX_UNPLACED_CHOICES]:
            with contextlib.suppress(ValueError):
                relative = Path(path).relative_to(self.library).as_posix()
                choices.setdefault(relative, f"{relative} (no mood yet)")
        return choices

    def feels_choices(self, viewer: Viewer, chosen: str | None = None) -> Any:
        """The song picker's choices; the listener's pick stays while it is one of them (a track that ends
        must not move it to the next one)."""
        choices = self._placeable(viewer)
        value = chosen if chosen in choices else next(iter(choices), None)
        return gr.Dropdown(choices=[(label, value) for value, label in choices.items()], value=value)

    def feels(self, song: str | None, emotion: str | None, viewer: Viewer) -> tuple[Any, Any, Any]:
        """Write `song feels emotion` to the music folder's sidecar and reload the music, so the next
        playlist uses it. -> (note, song choices, emotion picker cleared)."""
        if not emotion:
            return gr.skip(), gr.skip(), gr.skip()
        choices = self._placeable(viewer)
        if self.library is None or song not in choices or emotion not in EMOTIONS:
            note = "Pick a song of your music folder and one of the seven emotions."
            return feels_html(note), self.feels_choices(viewer), None
        try:
            set_sidecar_mood(self.library, self.library / song, emotion)
        except (CatalogError, OSError) as err:
            log.warning("could not save a song's mood: %s", err)
            return feels_html(f"Could not save that: {err}"), gr.skip(), None
        recommender, status = load_recommender(self.cfg)
        engine = self.engine()
        if recommender is None:
            note = f"Saved, but the music could not be reloaded ({status}); it applies after a restart."
            return feels_html(note), gr.skip(), None
        engine.recommender, engine.music_status = recommender, status  # what the next playlist comes from
        name = choices[song].rsplit(" (", 1)[0]
        where = f"{self.library.name}/{SIDECAR_NAME}"
        note = f"Saved: {name} feels {emotion} ({where}). The next playlist uses it."
        return feels_html(note), self.feels_choices(viewer), None


def build_page(engine: Callable[[], Any], cfg: DictConfig) -> gr.Blocks:
    """The Gradio Blocks of the page. `engine()` returns the object with the recognizer and recommender."""
    page = Page(engine, cfg)
    ui = cfg.ui
    rule0 = str(ui.get("face_rule", "largest"))
    strategy0 = str(ui.get("strategy") or cfg.music.strategy)
    if rule0 not in FACE_RULES:
        raise ValueError(f"ui.face_rule={rule0!r}: expected one of {', '.join(FACE_RULES)}")
    if strategy0 not in STRATEGIES:
        raise ValueError(f"ui.strategy={strategy0!r}: expected one of {', '.join(STRATEGIES)}")
    empty_viewer = Viewer(MoodSmoother(page.smoothing), ListeningSession(page.recent))

    age = int(ui.uploads.max_age_s)  # uploads nobody analysed (the page deletes those it reads)
    with gr.Blocks(title="emotune — music for your mood", delete_cache=(max(1, age // 2), age)) as blocks:
        viewer = gr.State(page.new_viewer)
        gr.HTML(
            f'<div class="et-header">{face_svg("happy", 34)}<h1>emotune</h1>'
            "<p>Music for the mood on your face. Camera frames and photos are analysed in memory; "
            "none is kept.</p></div>"
        )
        with gr.Row(equal_height=False):
            with gr.Column(scale=5, min_width=360):
                with gr.Tabs():
                    with gr.Tab("Live", id="live", elem_id="tab-live"):
                        camera = gr.Image(
                            sources=["webcam"],
                            streaming=True,
                            type="numpy",
                            label="Your camera",
                            height=220,
                            webcam_options=gr.WebcamOptions(
                                mirror=True, constraints={"video": {"width": 640, "height": 480}}
                            ),
                            elem_id="camera",
                        )
                        camera.preprocess = frame_reader(page.max_bytes, page.max_pixels)
                        with gr.Row(equal_height=True):
                            calibrate_button = gr.Button(
                                "Calibrate", size="sm", elem_id="calibrate", scale=0, min_width=110
                            )
                            reset_button = gr.Button(
                                "Reset", size="sm", elem_id="calibrate-reset", scale=0, min_width=80
                            )
                            calibration = gr.HTML(calibration_html(NOT_CALIBRATED), elem_id="calibration")
                    with gr.Tab("Photo", id="snapshot", elem_id="tab-snapshot"):
                        photo = gr.Image(
                            sources=["upload"],  # no camera: its pictures would be written to disk (above)
                            type="filepath",  # read into memory and deleted at once by Page.snapshot
                            label="Upload a photo",
                            height=220,
                            elem_id="photo",
                        )
                        photo.preprocess = _unopened_upload
                view = gr.HTML(view_html(None), elem_id="view")
                with gr.Row():
                    strategy = gr.Radio(
                        list(STRATEGIES),
                        value=strategy0,
                        label="Playlist",
                        info="match mirrors your mood · uplift starts there and leads it up",
                        elem_id="strategy",
                    )
                    rule = gr.Radio(
                        list(FACE_RULES),
                        value=rule0,
                        label="Several faces",
                        info="the mood follows the largest face · or the average of all",
                        elem_id="rule",
                    )
            with gr.Column(scale=4, min_width=320):
                mood = gr.HTML(mood_html(None, NO_FACE), elem_id="mood")
                bars = gr.HTML(bars_html(None), elem_id="probs")
                timeline = gr.HTML(timeline_html(empty_viewer.timeline), elem_id="timeline")
                now = gr.HTML(now_playing_html(empty_viewer), elem_id="now-playing")
                gr.HTML(SPOTIFY_BOX, elem_id="spotify")  # never updated: the player in it lives on
                audio = gr.Audio(
                    type="filepath",
                    autoplay=True,
                    visible=False,
                    interactive=False,
                    show_label=False,
                    buttons=["download"],
                    elem_id="player",
                )
                with gr.Row():
                    prev_button = gr.Button("‹ Previous", size="sm", elem_id="prev")
                    next_button = gr.Button("Next ›", size="sm", elem_id="next")
                with gr.Row(visible=page.library is not None, elem_id="feels-row"):
                    feels_song = gr.Dropdown(
                        [], value=None, label="Song", interactive=True, scale=3, elem_id="feels-song"
                    )
                    feels = gr.Dropdown(
                        list(EMOTIONS),
                        value=None,
                        label="This song feels…",
                        info="saved in your music folder",
                        interactive=True,
                        scale=2,
                        elem_id="feels",
                    )
                feels_note = gr.HTML("", elem_id="feels-note")
                playlist = gr.HTML(playlist_html(empty_viewer), elem_id="playlist")
                # What Spotify's player (PLAYER_JS) tells the server; never shown.
                spotify_playing = gr.Button(visible="hidden", elem_id="spotify-playing")
                spotify_paused = gr.Button(visible="hidden", elem_id="spotify-paused")
                spotify_ended = gr.Button(visible="hidden", elem_id="spotify-ended")

        music_out = [playlist, now, audio]
        hidden: dict[str, Any] = {"show_progress": "hidden", "api_visibility": "private"}
        camera.stream(
            page.live,
            inputs=[camera, rule, strategy, viewer],
            outputs=[view, bars, mood, *music_out, calibration, timeline],
            stream_every=float(ui.get("stream_every", 0.1)),
            concurrency_limit=int(cfg.serve.get("threads", 2)) * 2,
            api_name="live",
            **hidden,
        )
        # Clearing the input changes it too, so the handler runs once more with nothing; the clear hangs on
        # the count of handled pictures, not on the handler, or that empty run would send a second clear
        # that can wipe a picture chosen meanwhile.
        pictures = gr.State(0)
        photo.change(
            page.snapshot,
            inputs=[photo, rule, strategy, viewer],
            outputs=[view, bars, mood, *music_out, pictures],
            api_name="snapshot",
            concurrency_limit=int(cfg.serve.get("threads", 2)),  # one big photo must not hold up others
            **hidden,
        )
        pictures.change(_cleared, None, photo, api_name="clear_snapshot", **hidden)  # ready for the next
        calibrate_button.click(page.calibrate, [viewer], calibration, api_name="calibrate", **hidden)
        reset_button.click(
            page.reset_calibration, [viewer], calibration, api_name="reset_calibration", **hidden
        )
        strategy.change(page.strategy_changed, [strategy, viewer], music_out, api_name="strategy", **hidden)
        prev_button.click(page.previous, [viewer], music_out, api_name="previous", **hidden)
        next_button.click(page.next, [viewer], music_out, api_name="next", **hidden)
        audio.play(page.playing, [viewer], None, api_name="playing", **hidden)
        audio.pause(page.paused, [viewer], None, api_name="paused", **hidden)
        audio.stop(page.ended, [viewer], music_out, api_name="ended", **hidden)
        spotify_playing.click(page.playing, [viewer], None, api_name="spotify_playing", **hidden)
        spotify_paused.click(page.paused, [viewer], None, api_name="spotify_paused", **hidden)
        spotify_ended.click(page.ended, [viewer], music_out, api_name="spotify_ended", **hidden)
        if page.library is not None:
            now.change(
                page.feels_choices, [viewer, feels_song], feels_song, api_name="feels_choices", **hidden
            )
            feels.input(
                page.feels,
                [feels_song, feels, viewer],
                [feels_note, feels_song, feels],
                api_name="feels",
                **hidden,
            )
    return blocks


def mount_options(cfg: DictConfig) -> dict[str, Any]:
    """Launch/mount settings shared by the service mount and `emotune ui`."""
    library = cfg.music.get("library_dir")
    return {
        "theme": theme(),
        "css": CSS,
        "head": PLAYER_JS,
        "allowed_paths": [str(Path(library).expanduser().resolve())] if library else None,
        "show_error": False,  # errors are logged; the page shows its own short messages
        "ssr_mode": False,
        "footer_links": [],
        "max_file_size": int(cfg.serve.max_image_bytes),
    }


def page_app(cfg: DictConfig | None = None, engine: Callable[[], Any] | None = None) -> FastAPI:
    """A FastAPI app serving the page at its root: the service mounts it at /ui, `emotune ui` serves it."""
    if cfg is None:
        from emotune.serving import serve_settings

        cfg = serve_settings()
    blocks = build_page(engine or current_service, cfg)
    app = gr.mount_gradio_app(FastAPI(title="emotune page"), blocks, path="", **mount_options(cfg))
    # Gradio checks that a file input names a file uploaded to it, and an output a file in `allowed_paths`,
    # only in an app it launched: a mounted one copies any file of the server it is sent into its cache.
    blocks.has_launched = True
    max_bytes, max_pixels = int(cfg.serve.max_image_bytes), int(cfg.serve.max_image_pixels)
    uploads = cfg.ui.uploads
    app.add_middleware(
        UploadGuard,  # pictures only, within the limits, in a bounded space (emotune.http_guard)
        check=lambda data: open_image(data, max_bytes, max_pixels),
        max_file_bytes=max_bytes,
        max_total_bytes=int(uploads.max_total_bytes),
        max_files=int(uploads.max_files),
    )
    return app
