"""Calibration to a resting face, measured on FER2013 faces with simulated people (figure 7).

A person whose relaxed face the model misreads tilts every reading of their face the same way. Simulated:
the model's probabilities on PublicTest, and per person a shift of the logits, b = log r - log t, taken
from a sample of neutral-labelled faces the model reads as sad (or angry): r is their mean reading, t the
model's mean reading of a neutral face (the card's neutral reference). The person's calibration window is
a different sample of neutral faces seen through that shift (what the page would collect in three
seconds); everything else is scored, with and without emotune.calibration. An unbiased person (no shift,
a window of ordinary neutral faces) shows what calibration costs when there is nothing to correct.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emotune.calibration import recalibrate
from emotune.evaluation import classification_metrics
from emotune.labels import EMOTIONS

NEUTRAL = EMOTIONS.index("neutral")


@dataclass(frozen=True)
class Person:
    label: str
    lean: str | None  # the emotion their resting face reads as; None: unbiased
    strength: float = 1.0  # multiplies the logit shift


PEOPLE = (
    Person("unbiased (no shift)", None),
    Person("rests looking sad", "sad"),
    Person("rests looking angry", "angry"),
    Person("rests looking sad, twice as strongly", "sad", 2.0),
)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def simulate(
    probs: np.ndarray,
    labels: np.ndarray,
    neutral: np.ndarray,
    people: tuple[Person, ...] = PEOPLE,
    draws: int = 50,
    tilt_faces: int = 20,
    window: int = 30,
    seed: int = 0,
) -> list[dict[str, object]]:
    """One row per kind of person: accuracy, macro-F1 and neutral recall on the scored faces, without and
    with calibration, as means over `draws` simulated people (`tilt_faces` faces define a person's shift,
    `window` other neutral faces make their calibration window, as ~3 s of webcam frames would)."""
    probs = np.asarray(probs, np.float64)
    labels = np.asarray(labels)
    logits = np.log(np.clip(probs, 1e-12, None))
    neutral_rows = np.flatnonzero(labels == NEUTRAL)
    rng = np.random.default_rng(seed)
    rows: list[dict[str, object]] = []
    for person in people:
        if person.lean is None:
            leaning = np.zeros(0, np.int64)
        else:
            leaning = neutral_rows[probs[neutral_rows].argmax(axis=1) == EMOTIONS.index(person.lean)]
            if len(leaning) < tilt_faces:
                rows.append({"person": person.label, "note": f"only {len(leaning)} such faces"})
                continue
        scores: dict[str, list[float]] = {}
        for _ in range(draws):
            if person.lean is None:
                shift = np.zeros(len(EMOTIONS))
                defining = np.zeros(0, np.int64)
            else:
                defining = rng.choice(leaning, tilt_faces, replace=False)
                shift = person.strength * (np.log(probs[defining].mean(axis=0)) - np.log(neutral))
            resting_rows = rng.choice(np.setdiff1d(neutral_rows, defining), window, replace=False)
            scored = np.setdiff1d(np.arange(len(labels)), np.concatenate([defining, resting_rows]))
            seen = softmax(logits[scored] + shift)
            resting = softmax(logits[resting_rows] + shift).mean(axis=0)
            for name, readings in (("plain", seen), ("calibrated", recalibrate(seen, resting, neutral))):
                metrics = classification_metrics(labels[scored], readings)
                is_neutral = labels[scored] == NEUTRAL
                recall = float((readings[is_neutral].argmax(axis=1) == NEUTRAL).mean())
                for key, value in (
                    ("accuracy", metrics["accuracy"]),
                    ("macro F1", metrics["macro_f1"]),
                    ("neutral recall", recall),
                ):
                    scores.setdefault(f"{key} {name}", []).append(float(value))
        rows.append({"person": person.label, **{k: float(np.mean(v)) for k, v in scores.items()}})
    return rows
