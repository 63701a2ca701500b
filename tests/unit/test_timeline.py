"""The page's mood timeline: sampling, the window, the chart and the session snapshot."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from emotune.labels import EMOTIONS
from emotune.timeline import MoodTimeline, describe, snapshot_link

HAPPY = np.eye(7)[EMOTIONS.index("happy")] * 0.7 + 0.3 / 7
SAD = np.eye(7)[EMOTIONS.index("sad")] * 0.7 + 0.3 / 7
COLORS = {e: f"#{i:02d}{i:02d}{i:02d}" for i, e in enumerate(EMOTIONS)}


def test_one_point_per_interval_none_without_a_reading_and_only_the_window_kept():
    timeline = MoodTimeline(window_s=10, every_s=1.0)
    assert not timeline.add(0.0, None, None, None)  # no smoothed reading yet: nothing
    assert timeline.add(0.0, None, HAPPY, None)
    assert not timeline.add(0.5, "happy", HAPPY, None)  # within the interval
    for t in range(1, 30):
        assert timeline.add(float(t), "happy", HAPPY, "Song — Artist")
    times = [p.t for p in timeline.points]
    assert times[0] >= 29 - 10 and times[-1] == 29 and len(times) == 11
    with pytest.raises(ValueError, match="7 finite"):
        timeline.add(100.0, "happy", [0.5, 0.5], None)
    with pytest.raises(ValueError, match="positive"):
        MoodTimeline(window_s=0)


def test_the_chart_stacks_seven_bands_marks_the_settled_mood_and_the_songs():
    timeline = MoodTimeline(every_s=1.0)
    assert "starts with your first mood" in timeline.svg(COLORS)
    for t in range(6):
        mood, probs = ("happy", HAPPY) if t < 3 else ("sad", SAD)
        timeline.add(float(t), mood, probs, "A <b>song</b> — X" if t < 4 else "Next — Y")
    svg = timeline.svg(COLORS)
    assert len(re.findall(r'class="et-band"', svg)) == 7
    settled = re.findall(r'class="et-settled" data-mood="(\w+)"', svg)
    assert settled == ["happy"] * 3 + ["sad"] * 2  # one strip per interval, coloured by the mood
    assert svg.count('class="et-song"') == 2 and "&lt;b&gt;song&lt;/b&gt;" in svg and "<b>" not in svg
    assert 'data-points="6"' in svg
    assert describe(list(timeline.points)) == {"happy": 3.0, "sad": 2.0}


def test_the_snapshot_is_numbers_and_titles_only_and_downloads_from_the_page():
    timeline = MoodTimeline(every_s=1.0)
    for t in range(3):
        timeline.add(float(t), "happy", HAPPY, "Song — Artist")
    data = json.loads(timeline.to_json())
    assert data["labels"] == list(EMOTIONS) and data["every_s"] == 1.0
    assert [p["t"] for p in data["points"]] == [0.0, 1.0, 2.0]
    assert set(data["points"][0]) == {"t", "mood", "probabilities", "track"}
    np.testing.assert_allclose(data["points"][0]["probabilities"], HAPPY, atol=1e-4)
    link = snapshot_link(timeline)
    encoded = re.search(r'href="data:application/json;base64,([^"]+)"', link).group(1)
    assert json.loads(base64.b64decode(encoded)) == data and 'download="emotune-session.json"' in link
