"""The page's mood rules: which face counts, and smoothing with hysteresis (emotune.mood)."""

from __future__ import annotations

import numpy as np
import pytest

from emotune.labels import EMOTIONS
from emotune.mood import MoodSmoother, Smoothing, select_mood, selected_faces

FPS = 10


def onehot(emotion: str, p: float = 0.9) -> np.ndarray:
    """`p` on the emotion, the rest spread evenly over the other six."""
    probs = np.full(len(EMOTIONS), (1 - p) / (len(EMOTIONS) - 1))
    probs[EMOTIONS.index(emotion)] = p
    return probs


def feed(smoother: MoodSmoother, frames, start: float = 0.0):
    """Feed frames at FPS; returns the readings."""
    return [smoother.update(f, start + i / FPS) for i, f in enumerate(frames)]


def test_largest_face_rule_picks_the_biggest_box():
    boxes = [(0, 0, 50, 50), (100, 0, 120, 110), (300, 0, 80, 80)]
    probs = [onehot("sad"), onehot("happy"), onehot("angry")]
    assert selected_faces(boxes, "largest") == [1]
    np.testing.assert_allclose(select_mood(boxes, probs, "largest"), onehot("happy"))


def test_average_rule_takes_the_mean_over_faces():
    boxes = [(0, 0, 50, 50), (100, 0, 120, 110)]
    probs = [onehot("sad", 0.7), onehot("happy", 0.5)]
    mood = select_mood(boxes, probs, "average")
    np.testing.assert_allclose(mood, (onehot("sad", 0.7) + onehot("happy", 0.5)) / 2)
    assert EMOTIONS[int(np.argmax(mood))] == "sad"
    assert selected_faces(boxes, "average") == [0, 1]


def test_face_rules_without_faces_and_with_bad_input():
    assert select_mood([], np.zeros((0, 7)), "largest") is None
    assert select_mood([], [], "average") is None
    with pytest.raises(ValueError, match="face rule"):
        select_mood([(0, 0, 1, 1)], [onehot("sad")], "loudest")
    with pytest.raises(ValueError, match="boxes"):
        select_mood([(0, 0, 1, 1)], [onehot("sad"), onehot("happy")])
    with pytest.raises(ValueError, match="probabilities"):
        select_mood([(0, 0, 1, 1)], [[0.5, 0.5]])


def test_first_mood_settles_after_min_frames():
    smoother = MoodSmoother(Smoothing(min_frames=3))
    readings = feed(smoother, [onehot("happy")] * 4)
    assert [r.mood for r in readings] == [None, None, "happy", "happy"]
    assert [r.changed for r in readings] == [False, False, True, False]


def test_one_odd_frame_never_flips_the_mood():
    smoother = MoodSmoother(Smoothing(alpha=0.5, margin=0.1, hold_s=0.5, min_frames=3))
    frames = [onehot("happy")] * 5 + [onehot("angry", 1.0)] + [onehot("happy")] * 5
    frames += [onehot("angry", 1.0), onehot("angry", 1.0)] + [onehot("happy")] * 5  # two odd frames too
    readings = feed(smoother, frames)
    assert {r.mood for r in readings[2:]} == {"happy"}
    assert sum(r.changed for r in readings) == 1  # only the first mood


def test_a_lasting_change_switches_after_the_hold_time_and_frames():
    cfg = Smoothing(alpha=0.4, margin=0.1, hold_s=1.0, min_frames=3)
    smoother = MoodSmoother(cfg)
    feed(smoother, [onehot("sad")] * 5)
    readings = feed(smoother, [onehot("surprise")] * 30, start=1.0)
    switched = next(i for i, r in enumerate(readings) if r.mood == "surprise")
    assert readings[switched].changed and sum(r.changed for r in readings) == 1
    # The challenger appears within a few frames, then must hold for hold_s (10 frames at 10 fps).
    first_lead = next(i for i, r in enumerate(readings) if r.challenger == "surprise")
    assert first_lead <= 3
    assert (switched - first_lead) / FPS >= cfg.hold_s - 1e-9
    assert all(r.mood == "sad" for r in readings[:switched])


def test_margin_keeps_a_near_tie_from_switching():
    smoother = MoodSmoother(Smoothing(alpha=1.0, margin=0.2, hold_s=0.0, min_frames=1))
    feed(smoother, [onehot("neutral", 0.5)])
    near_tie = np.array([0, 0, 0, 0.45, 0, 0, 0.35]) + 0.2 / 7  # happy leads neutral by 0.10 < 0.2
    assert all(r.mood == "neutral" for r in feed(smoother, [near_tie] * 20, start=1))
    clear_lead = np.array([0, 0, 0, 0.6, 0, 0, 0.3]) + 0.1 / 7  # by 0.30 >= 0.2
    assert feed(smoother, [clear_lead], start=5)[0].mood == "happy"


def test_no_face_keeps_the_mood_and_says_so_after_a_while():
    smoother = MoodSmoother(Smoothing(min_frames=2, no_face_s=2.0))
    feed(smoother, [onehot("happy")] * 5)  # last face at t=0.4
    brief = smoother.update(None, 1.0)
    assert brief.face and brief.mood == "happy" and not brief.changed
    gone = smoother.update(None, 2.5)
    assert not gone.face and gone.mood == "happy" and not gone.changed
    # The next face starts a fresh average; its lead still has to hold before the mood moves.
    back = feed(smoother, [onehot("sad")] * 3, start=3.0)
    assert back[0].face and back[0].mood == "happy"
    np.testing.assert_allclose(back[0].probabilities, onehot("sad"))


def test_snapshot_sets_the_mood_at_once_and_smoothing_goes_on_from_it():
    smoother = MoodSmoother(Smoothing(min_frames=5))
    reading = smoother.set(onehot("fear"), now=0.0)
    assert reading.mood == "fear" and reading.changed
    assert not smoother.set(onehot("fear"), now=1.0).changed
    assert feed(smoother, [onehot("fear")] * 2, start=2.0)[-1].mood == "fear"


def test_smoothing_config_is_validated():
    assert Smoothing.from_config({"alpha": "0.5", "min_frames": 4}) == Smoothing(alpha=0.5, min_frames=4)
    with pytest.raises(ValueError, match="unknown"):
        Smoothing.from_config({"alpah": 0.5})
    for bad in ({"alpha": 0}, {"margin": 1.5}, {"min_frames": 0}, {"hold_s": -1}):
        with pytest.raises(ValueError):
            Smoothing(**bad)
    with pytest.raises(ValueError, match="probabilities"):
        MoodSmoother().update([0.5, 0.5], 0.0)
