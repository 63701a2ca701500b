"""The split policy: which faces validate a training run, and which split the evaluation reports.

A run validates on the prepared validation split, or on a held-out share of Training.

Validation chooses things (the checkpointed epoch, early stopping, promote's champion), so a split that
validated cannot also give an unbiased accuracy. The development data has no PrivateTest rows; validating on
PublicTest there would leave nothing held out. `train.validation_holdout` fixes that: a seeded, stratified
share of the Training rows validates, and PublicTest stays untouched until the evaluate stage.

Training and promote both call `validation_faces`, so the export check sees exactly the rows that validated,
and `fingerprint` lets promote compare only runs that validated on the same faces.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from emotune.data.fer2013 import USAGE_TO_SPLIT

DEFAULT_FRACTION = 0.1  # `auto` on data without a test split: ~2,900 FER2013 faces, ~0.9 points of noise


@dataclass(frozen=True)
class Validation:
    """The faces a run validates on, and the training rows left to fit on (indices into the train split)."""

    x: np.ndarray
    y: np.ndarray
    fit_rows: np.ndarray
    source: str  # "holdout" (rows of the train split) or "validation" (the prepared validation split)
    fraction: float

    def describe(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "fraction": self.fraction,
            "rows": len(self.y),
            "fingerprint": fingerprint(self.x, self.y),
        }


def holdout_fraction(setting: Any, has_test_split: bool) -> float:
    """train.validation_holdout -> a fraction in [0, 1): `auto` holds out 10% only when there is no test
    split (with PrivateTest rows, PublicTest validates as in the FER2013 protocol); 0 or null = none."""
    if setting is None or setting == "auto":
        return 0.0 if (setting is None or has_test_split) else DEFAULT_FRACTION
    try:
        fraction = float(setting)
    except (TypeError, ValueError):
        fraction = -1.0
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"train.validation_holdout={setting!r}: expected auto, 0 or a fraction below 1")
    return fraction


def stratified_holdout(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit rows, held-out rows), both sorted: `fraction` of every class (rounded, at least one face of a
    class with two or more), chosen by a generator seeded with `seed` so a rerun holds out the same faces."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    held: list[np.ndarray] = []
    for label in np.unique(labels):
        rows = np.flatnonzero(labels == label)
        take = round(fraction * len(rows))
        if fraction > 0 and len(rows) > 1:
            take = min(max(take, 1), len(rows) - 1)
        held.append(rng.permutation(rows)[:take])
    out = np.sort(np.concatenate(held)) if held else np.zeros(0, np.int64)
    keep = np.ones(len(labels), bool)
    keep[out] = False
    return np.flatnonzero(keep), out


def fingerprint(x: np.ndarray, y: np.ndarray) -> str:
    """A short hash of the faces and labels: two runs validated alike exactly when theirs match."""
    digest = hashlib.sha256()
    for array in (x, y):
        array = np.ascontiguousarray(array)
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(array.tobytes())
    return digest.hexdigest()[:16]


def validation_faces(
    splits: Mapping[str, tuple[np.ndarray, np.ndarray]], setting: Any, seed: int
) -> Validation:
    """The validation faces for `train.validation_holdout=setting` on the prepared `splits`."""
    x_train, y_train = splits["train"]
    fraction = holdout_fraction(setting, "test" in splits)
    if fraction:
        fit_rows, held = stratified_holdout(y_train, fraction, seed)
        return Validation(x_train[held], y_train[held], fit_rows, "holdout", fraction)
    if "validation" not in splits:
        raise ValueError(
            "the prepared data has no validation split (no PublicTest rows): set train.validation_holdout, "
            "e.g. 0.1, to validate on a share of the training rows"
        )
    x_val, y_val = splits["validation"]
    return Validation(x_val, y_val, np.arange(len(y_train)), "validation", 0.0)


def held_out_split(splits: Mapping[str, tuple[np.ndarray, np.ndarray]], validation: Validation) -> str | None:
    """The prepared split that chose nothing: test when there is one, else the validation split (PublicTest)
    when the run validated on held-out training rows; None when every split helped choose."""
    if "test" in splits:
        return "test"
    if validation.source == "holdout" and "validation" in splits:
        return "validation"
    return None


SPLIT_NOTES = {
    "test": "test split (FER2013 PrivateTest rows): held out from training and from choosing the best epoch",
    "validation": (
        "no test split in the data (no PrivateTest rows), so this is the validation split (PublicTest), "
        "which also chose the best epoch: an optimistic estimate"
    ),
    "train": "no test or validation rows, so this is the TRAINING split: not a generalisation estimate",
    "all": "every row of the data, whatever its Usage",
}


def choose_split(
    available: Iterable[str], requested: str = "auto", notes: Mapping[str, str] = SPLIT_NOTES
) -> tuple[str, str]:
    """(split, note): `auto` takes test, else validation, else train, and the note says which and why."""
    available = set(available)
    if requested == "auto":
        for split in ("test", "validation", "train"):
            if split in available:
                return split, notes[split]
        raise ValueError("the data has no rows in any split")
    if requested not in available:
        raise ValueError(f"split {requested!r} not in the data (it has: {', '.join(sorted(available))})")
    return requested, notes[requested] if requested == "test" else f"{requested} split, as requested"


VALIDATION_SOURCES = {
    "holdout": "training rows held out by train.validation_holdout",
    "validation": "the validation split",
}


def split_label(split: str | None) -> str:
    """`validation` -> `validation split, FER2013 PublicTest rows`: the Usage names readers know."""
    usage = {s: u for u, s in USAGE_TO_SPLIT.items()}.get(split or "")
    return f"{split} split, FER2013 {usage} rows" if usage else "held-out split"
