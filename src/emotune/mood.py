"""The page's mood: which face counts, and a smoothed mood that one odd frame cannot flip.

Pure Python + NumPy (no Gradio, no model), so the rules are unit-tested on their own.

Face rule (`ui.face_rule`, selectable in the page):
  largest  the biggest face box drives the mood (the person nearest the camera); ties: the first found
  average  the mean of every face's probabilities (the group's mood)

Smoothing (`ui.smoothing`), one `MoodSmoother` per browser session:
  1. an exponential moving average (EMA) of the chosen face's probabilities: ema += alpha * (p - ema);
  2. hysteresis: the mood switches only when another emotion leads the EMA by at least `margin` over the
     current mood, continuously for `hold_s` seconds AND `min_frames` frames (a time rule alone would let
     one frame after a pause switch it; a frame rule alone would depend on the frame rate);
  3. the first mood needs `min_frames` frames with a face; after `no_face_s` seconds without one the page
     says so, keeps the mood (and so the playlist), and the next face restarts the average from scratch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from emotune.labels import EMOTIONS, NUM_CLASSES

FACE_RULES = ("largest", "average")


def _probability_rows(probabilities: Sequence[Sequence[float]] | np.ndarray) -> np.ndarray:
    probs = np.asarray(probabilities, dtype=np.float64)
    if probs.size == 0:
        return probs.reshape(0, NUM_CLASSES)
    if probs.ndim != 2 or probs.shape[1] != NUM_CLASSES:
        raise ValueError(f"expected (faces, {NUM_CLASSES}) probabilities, got shape {probs.shape}")
    return probs


def selected_faces(boxes: Sequence[Sequence[float]], rule: str = "largest") -> list[int]:
    """Indices of the faces whose probabilities make the mood under `rule` (all of them for "average")."""
    if rule not in FACE_RULES:
        raise ValueError(f"face rule must be one of {', '.join(FACE_RULES)}, got {rule!r}")
    if len(boxes) == 0:
        return []
    if rule == "average":
        return list(range(len(boxes)))
    areas = [float(b[2]) * float(b[3]) for b in boxes]
    return [int(np.argmax(areas))]  # argmax keeps the first of equal areas


def select_mood(
    boxes: Sequence[Sequence[float]],
    probabilities: Sequence[Sequence[float]] | np.ndarray,
    rule: str = "largest",
) -> np.ndarray | None:
    """The frame's (7,) mood probabilities under the face rule; None when there is no face."""
    probs = _probability_rows(probabilities)
    if len(boxes) != len(probs):
        raise ValueError(f"{len(boxes)} boxes but {len(probs)} probability rows")
    chosen = selected_faces(boxes, rule)
    return probs[chosen].mean(axis=0) if chosen else None


@dataclass(frozen=True)
class Smoothing:
    alpha: float = 0.3  # weight of the newest frame in the moving average
    margin: float = 0.1  # a challenger must lead the current mood by this much (probability points)...
    hold_s: float = 1.0  # ...for this long...
    min_frames: int = 3  # ...and this many frames in a row
    no_face_s: float = 2.0  # without a face this long: "no face" (the mood and playlist stay)

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError(f"smoothing.alpha must be in (0, 1], got {self.alpha}")
        if not 0 <= self.margin < 1:
            raise ValueError(f"smoothing.margin must be in [0, 1), got {self.margin}")
        if self.hold_s < 0 or self.no_face_s < 0:
            raise ValueError("smoothing.hold_s and smoothing.no_face_s must be >= 0")
        if self.min_frames < 1:
            raise ValueError(f"smoothing.min_frames must be >= 1, got {self.min_frames}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> Smoothing:
        """From `ui.smoothing` (unknown keys are an error: a typo must not silently do nothing)."""
        values = dict(cfg or {})
        unknown = set(values) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown ui.smoothing setting(s): {', '.join(sorted(unknown))}")
        return cls(**{k: type(getattr(cls, k))(v) for k, v in values.items()})


@dataclass(frozen=True)
class MoodReading:
    """What the page shows after a frame."""

    mood: str | None  # the smoothed mood that drives the playlist; None until the first one settles
    probabilities: np.ndarray | None  # the moving average, (7,) in EMOTIONS order
    changed: bool  # the mood changed with this frame: time for a new playlist
    face: bool  # a face was seen recently (within no_face_s)
    challenger: str | None = None  # an emotion that leads by the margin but has not held long enough


class MoodSmoother:
    """EMA + hysteresis over one viewer's frames. `now` is a monotonic clock in seconds (time.monotonic)."""

    def __init__(self, config: Smoothing | None = None) -> None:
        self.config = config or Smoothing()
        self.reset()

    def reset(self) -> None:
        self.mood: str | None = None
        self.ema: np.ndarray | None = None
        self.last_face: float | None = None
        self._frames = 0  # consecutive frames the challenger (or, before any mood, any face) has led
        self._challenger: int | None = None
        self._since = 0.0

    def _reading(self, changed: bool, face: bool) -> MoodReading:
        challenger = None if self._challenger is None else EMOTIONS[self._challenger]
        ema = None if self.ema is None else self.ema.copy()
        return MoodReading(self.mood, ema, changed, face, challenger)

    def update(self, probabilities: Sequence[float] | np.ndarray | None, now: float) -> MoodReading:
        """Feed one frame's mood probabilities (None: no face in the frame)."""
        cfg = self.config
        if probabilities is None:
            away = self.last_face is None or now - self.last_face >= cfg.no_face_s
            if away:  # the next face starts a fresh average and must settle again to move the mood
                self.ema, self._challenger, self._frames = None, None, 0
            return self._reading(changed=False, face=not away)
        probs = _checked(probabilities)
        self.last_face = now
        self.ema = probs.copy() if self.ema is None else self.ema + cfg.alpha * (probs - self.ema)
        leader = int(np.argmax(self.ema))
        if self.mood is None:
            self._frames += 1
            if self._frames >= cfg.min_frames:
                return self._commit(leader)
            return self._reading(changed=False, face=True)
        current = EMOTIONS.index(self.mood)
        if leader == current or self.ema[leader] - self.ema[current] < cfg.margin:
            self._challenger, self._frames = None, 0
            return self._reading(changed=False, face=True)
        if leader != self._challenger:
            self._challenger, self._frames, self._since = leader, 0, now
        self._frames += 1
        if self._frames >= cfg.min_frames and now - self._since >= cfg.hold_s:
            return self._commit(leader)
        return self._reading(changed=False, face=True)

    def set(self, probabilities: Sequence[float] | np.ndarray, now: float) -> MoodReading:
        """Take a mood at once (a snapshot: one deliberate picture, nothing to smooth)."""
        self.ema = _checked(probabilities).copy()
        self.last_face = now
        return self._commit(int(np.argmax(self.ema)))

    def _commit(self, leader: int) -> MoodReading:
        changed = EMOTIONS[leader] != self.mood
        self.mood = EMOTIONS[leader]
        self._challenger, self._frames = None, 0
        return self._reading(changed=changed, face=True)


def _checked(probabilities: Sequence[float] | np.ndarray) -> np.ndarray:
    probs = np.asarray(probabilities, dtype=np.float64).ravel()
    if probs.shape != (NUM_CLASSES,) or not np.all(np.isfinite(probs)) or np.any(probs < 0):
        raise ValueError(f"expected {NUM_CLASSES} finite probabilities >= 0, got {probs.tolist()}")
    return probs
