"""Calibration to a person's resting face: read expressions relative to how this face looks at rest.

Every expression model misreads some faces at rest (low brows read "sad" or "angry"), and then the whole
session follows a mood the person does not have. Treat that as a label shift: this person's faces come out
of the model tilted by a per-class factor, measured on their resting face. With `r` the mean probabilities
over a few seconds of the relaxed face and `t` what the model gives a neutral face on average (the model
card's `calibration.neutral_mean`, measured on validation faces when the model was promoted), each reading
`p` becomes

    p'(c) = p(c) * exp(shrink(log((t(c) + FLOOR) / (r(c) + FLOOR)), DEADBAND)), normalised to sum 1,

where shrink(x, d) = sign(x) * max(|x| - d, 0). Without FLOOR and DEADBAND that is p * t / r: the resting
face reads `t` (neutral) and a face at rest like `t` changes nothing. FLOOR keeps a class the model hardly
ever gives (disgust, ~1%) from turning noise into a large factor, and bounds every factor by
(1 + FLOOR) / FLOOR; DEADBAND treats differences of up to ~28% as the ordinary difference between one
neutral face and another rather than a bias. Both were chosen on simulated people built from validation
faces (benchmarks/calibration.py, docs/page.md): most of the gain for biased resting faces while an
unbiased one loses no more than about one face in three thousand.

Pure NumPy: the page keeps a `Calibration` per browser session (nothing is stored), and POST /analyze takes
the resting vector as an optional input.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from emotune.labels import EMOTIONS, NUM_CLASSES

FLOOR = 0.05
CALIBRATED = "Calibrated to your resting face"  # what `finish` says when it keeps the window
DEADBAND = 0.25
# Used when a model card has no measured neutral output (models promoted before it was recorded): a reading
# that is mostly neutral, the rest spread evenly.
DEFAULT_NEUTRAL = np.array([0.05, 0.05, 0.05, 0.05, 0.05, 0.05, 0.70])
assert EMOTIONS[-1] == "neutral" and len(DEFAULT_NEUTRAL) == NUM_CLASSES


def probability_vector(values: Any, what: str = "resting") -> np.ndarray:
    """`values` as a (7,) float64 distribution in EMOTIONS order: a sequence of 7 numbers, an {emotion: p}
    mapping or a comma-separated string. Refuses the wrong length, NaN/inf, negatives and an all-zero
    vector with a message that names `what`; normalises the sum to 1."""
    if isinstance(values, str):
        parts = [v.strip() for v in values.split(",")]
        if len(parts) != NUM_CLASSES:
            raise ValueError(
                f"{what}: expected {NUM_CLASSES} comma-separated probabilities, got {len(parts)}"
            )
        try:
            values = [float(v) for v in parts]
        except ValueError as err:
            raise ValueError(f"{what}: not a number ({err})") from None
    elif isinstance(values, Mapping):
        unknown = sorted(set(values) - set(EMOTIONS))
        if unknown:
            raise ValueError(f"{what}: unknown emotion(s) {', '.join(map(str, unknown))}")
        values = [values.get(e, 0.0) for e in EMOTIONS]
    try:
        vector = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{what}: expected {NUM_CLASSES} probabilities ({err})") from None
    if vector.shape != (NUM_CLASSES,):
        raise ValueError(f"{what}: expected {NUM_CLASSES} probabilities, got shape {vector.shape}")
    if not np.isfinite(vector).all():
        raise ValueError(f"{what}: probabilities must be finite numbers")
    if (vector < 0).any():
        raise ValueError(f"{what}: probabilities must not be negative")
    total = vector.sum()
    if total <= 0:
        raise ValueError(f"{what}: probabilities must not all be zero")
    if not np.isfinite(total):  # e.g. 1e308 twice: the sum overflows and every share would read 0
        raise ValueError(f"{what}: probabilities too large to add up (their sum overflows)")
    return vector / total


def neutral_reference(card: Mapping[str, Any] | None) -> np.ndarray:
    """The model's mean output on neutral faces from its card, else DEFAULT_NEUTRAL."""
    measured = ((card or {}).get("calibration") or {}).get("neutral_mean")
    if measured is None:
        return DEFAULT_NEUTRAL / DEFAULT_NEUTRAL.sum()
    return probability_vector(measured, "model card calibration.neutral_mean")


def factors(resting: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """The per-class correction of a reading (module docstring)."""
    log_ratio = np.log(np.asarray(neutral, np.float64) + FLOOR) - np.log(
        np.asarray(resting, np.float64) + FLOOR
    )
    return np.exp(np.sign(log_ratio) * np.maximum(np.abs(log_ratio) - DEADBAND, 0.0))


def recalibrate(probabilities: np.ndarray, resting: np.ndarray, neutral: np.ndarray) -> np.ndarray:
    """Readings (7,) or (N, 7) relative to the resting face (module docstring); rows still sum to 1."""
    probs = np.asarray(probabilities, np.float64)
    if probs.shape[-1:] != (NUM_CLASSES,):
        raise ValueError(f"expected probabilities of {NUM_CLASSES} classes, got shape {probs.shape}")
    shifted = probs * factors(resting, neutral)
    totals = shifted.sum(axis=-1, keepdims=True)
    return np.where(totals > 0, shifted / np.where(totals > 0, totals, 1.0), probs)


@dataclass
class Calibration:
    """A browser session's calibration: `start` opens a window of `seconds`, `add` collects the readings of
    the frames in it, and once it has passed `finish` keeps their mean as the resting face when at least
    `min_frames` frames had a face (and they were at least `min_face_share` of the frames), else keeps the
    previous state and says why. `reset` forgets it."""

    neutral: np.ndarray
    seconds: float = 3.0
    min_frames: int = 8
    min_face_share: float = 0.7
    resting: np.ndarray | None = None
    started: float | None = None
    readings: list[np.ndarray] = field(default_factory=list)
    frames: int = 0

    @property
    def active(self) -> bool:
        return self.started is not None

    def start(self, now: float) -> None:
        self.started, self.readings, self.frames = now, [], 0

    def add(self, probabilities: np.ndarray | None, now: float) -> str | None:
        """Count a frame (None: no face) while collecting; when the window is over, finish and return the
        message to show (None while still collecting or when not calibrating)."""
        if self.started is None:
            return None
        self.frames += 1
        if probabilities is not None:
            self.readings.append(probability_vector(probabilities, "reading"))
        if now - self.started < self.seconds:
            return None
        return self.finish()

    def finish(self) -> str:
        faces, frames = len(self.readings), self.frames
        self.started = None
        if faces < self.min_frames or faces < self.min_face_share * frames:
            kept = "kept the previous calibration" if self.resting is not None else "not calibrated"
            return (
                f"Calibration needs your face in view the whole time: it was found in {faces} of {frames} "
                f"frames (at least {self.min_frames} and {self.min_face_share:.0%} needed); {kept}"
            )
        self.resting = np.mean(self.readings, axis=0)
        self.readings = []
        return CALIBRATED

    def reset(self) -> None:
        self.resting, self.started, self.readings, self.frames = None, None, [], 0


def resting_summary(resting: Sequence[float]) -> str:
    """'sad 41%, neutral 30%, angry 12%': the resting face's three strongest readings, for the page."""
    order = np.argsort(resting)[::-1][:3]
    return ", ".join(f"{EMOTIONS[i]} {100 * float(resting[i]):.0f}%" for i in order)
