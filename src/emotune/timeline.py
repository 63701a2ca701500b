"""The page's mood timeline: the smoothed mood of the last minutes, and the song that was playing.

One point per `every_s` seconds of streaming (the smoothed probabilities, the mood, the track), at most
`window_s` seconds kept. `svg` draws it as seven stacked colour bands (the mood mix over time) with the
settled mood as a strip above and the songs as marks below; `to_json` is the session's snapshot: numbers
and titles only, never an image. Pure Python + NumPy, so it is unit-tested on its own.
"""

from __future__ import annotations

import base64
import html
import json
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np

from emotune.labels import EMOTIONS, NUM_CLASSES


@dataclass(frozen=True)
class Point:
    t: float  # seconds since the timeline started
    mood: str | None  # the settled mood (None before the first)
    probabilities: tuple[float, ...]  # the smoothed mix, EMOTIONS order
    track: str | None  # "name — artist" of the track in the player


class MoodTimeline:
    def __init__(self, window_s: float = 300.0, every_s: float = 1.0) -> None:
        if window_s <= 0 or every_s <= 0:
            raise ValueError("the timeline's window and interval must be positive")
        self.window_s, self.every_s = float(window_s), float(every_s)
        self.points: deque[Point] = deque(maxlen=int(window_s / every_s) + 1)
        self.start: float | None = None

    def add(
        self, now: float, mood: str | None, probabilities: Sequence[float] | None, track: str | None
    ) -> bool:
        """Record the reading at `now` (a monotonic clock) when `every_s` has passed since the last point;
        True when a point was added. Frames without a smoothed reading add nothing."""
        if probabilities is None:
            return False
        if self.start is None:
            self.start = now
        t = now - self.start
        if self.points and t - self.points[-1].t < self.every_s:
            return False
        probs = np.asarray(probabilities, np.float64)
        if probs.shape != (NUM_CLASSES,) or not np.isfinite(probs).all():
            raise ValueError(f"expected {NUM_CLASSES} finite probabilities, got {probs.shape}")
        self.points.append(Point(round(t, 3), mood, tuple(round(float(p), 4) for p in probs), track))
        while self.points and t - self.points[0].t > self.window_s:
            self.points.popleft()
        return True

    def to_json(self) -> str:
        """The session's snapshot: every point kept, and the labels' order."""
        return json.dumps(
            {
                "labels": list(EMOTIONS),
                "every_s": self.every_s,
                "points": [
                    {"t": p.t, "mood": p.mood, "probabilities": list(p.probabilities), "track": p.track}
                    for p in self.points
                ],
            }
        )

    def svg(self, colors: Mapping[str, str], width: int = 560, height: int = 120) -> str:
        """Stacked bands of the seven probabilities over time, the settled mood as a strip on top, and a
        tick where the song changed; an empty chart says so."""
        if len(self.points) < 2:
            return (
                f'<svg class="et-timeline" viewBox="0 0 {width} {height}" role="img" '
                'aria-label="mood timeline"><text x="8" y="20">The timeline starts with your first mood'
                "</text></svg>"
            )
        t0, t1 = self.points[0].t, self.points[-1].t
        strip, chart = 10, height - 22

        def x(t: float) -> float:
            return round((t - t0) / max(t1 - t0, 1e-9) * width, 1)

        parts = []
        probs = np.array([p.probabilities for p in self.points])
        cumulative = np.cumsum(probs / probs.sum(axis=1, keepdims=True), axis=1)
        lower = np.zeros(len(self.points))
        for k, emotion in enumerate(EMOTIONS):
            upper = cumulative[:, k]
            top = " ".join(
                f"{x(p.t)},{strip + 2 + chart * (1 - u):.1f}" for p, u in zip(self.points, upper, strict=True)
            )
            bottom = " ".join(
                f"{x(p.t)},{strip + 2 + chart * (1 - lo):.1f}"
                for p, lo in zip(reversed(self.points), lower[::-1], strict=True)
            )
            parts.append(
                f'<polygon class="et-band" data-emotion="{emotion}" fill="{colors.get(emotion, "#999")}" '
                f'points="{top} {bottom}"/>'
            )
            lower = upper
        for a, b in pairwise(self.points):
            if a.mood:
                parts.append(
                    f'<rect class="et-settled" data-mood="{a.mood}" x="{x(a.t)}" y="0" '
                    f'width="{max(x(b.t) - x(a.t), 0.5)}" height="{strip}" '
                    f'fill="{colors.get(a.mood, "#999")}"/>'
                )
        previous = None
        for p in self.points:
            if p.track and p.track != previous:
                parts.append(
                    f'<line class="et-song" x1="{x(p.t)}" x2="{x(p.t)}" y1="{height - 8}" y2="{height}" '
                    f'stroke="currentColor"><title>{html.escape(p.track)}</title></line>'
                )
            previous = p.track
        minutes = (t1 - t0) / 60
        label = f"last {minutes:.1f} min" if minutes >= 1 else f"last {t1 - t0:.0f} s"
        return (
            f'<svg class="et-timeline" viewBox="0 0 {width} {height}" role="img" aria-label="mood timeline, '
            f'{label}" data-points="{len(self.points)}">{"".join(parts)}</svg>'
        )


def snapshot_link(timeline: MoodTimeline) -> str:
    """A link that downloads the timeline's JSON from the page itself (a data URL: no file on the server)."""
    data = base64.b64encode(timeline.to_json().encode()).decode()
    return (
        f'<a class="et-link" download="emotune-session.json" href="data:application/json;base64,{data}">'
        "Download this session (JSON, no images)</a>"
    )


def describe(points: Sequence[Point]) -> dict[str, Any]:
    """How long each settled mood lasted (seconds), for the snapshot's summary line."""
    spent: dict[str, float] = {}
    for a, b in pairwise(points):
        if a.mood:
            spent[a.mood] = spent.get(a.mood, 0.0) + (b.t - a.t)
    return spent
