"""FER+ annotator votes (Microsoft FERPlus) as soft training targets for FER2013.

FER+ had ten crowd workers relabel every FER2013 image. Its CSV (`Usage,Image name,neutral,happiness,surprise,
sadness,anger,disgust,fear,contempt,unknown,NF`) lines up row for row with the Kaggle FER2013 CSV, so the
votes of the `Training` rows, in file order, belong to the prepared training split in its order.

The target for a face is `(1 - weight) * one_hot(FER2013 label) + weight * votes / sum(votes)` over the seven
FER2013 emotions: the original label keeps its say, and the votes add what the crowd saw (a face that is half
sad and half neutral says so). Faces with no vote for any of the seven emotions (contempt, unknown or "not a
face") keep their one-hot target.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from emotune.data.fer2013 import MAX_ERRORS, DataValidationError
from emotune.labels import EMOTIONS, NUM_CLASSES

# FER+ column for each FER2013 emotion, in EMOTIONS order (angry, disgust, fear, happy, sad, surprise,
# neutral).
VOTE_COLUMNS = ("anger", "disgust", "fear", "happiness", "sadness", "surprise", "neutral")
assert len(VOTE_COLUMNS) == NUM_CLASSES == len(EMOTIONS)

# On the real data the FER2013 label is the crowd's top emotion for ~65% of voted faces; a file that does not
# line up with the training rows agrees far less often (~18% when shifted by one row): refuse such a file.
MIN_AGREEMENT = 0.45


def load_votes(path: Path | str, usage: str = "Training") -> np.ndarray:
    """Votes for the seven FER2013 emotions of the rows whose Usage is `usage`: float32 (N, 7), file order.

    Raises FileNotFoundError with the fix when the file is missing, and DataValidationError naming 1-based
    line numbers for a missing column or a vote that is not a whole number >= 0 (an empty cell counts 0).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"FER+ votes not found at {path}: get fer2013new.csv from github.com/microsoft/FERPlus "
            "(or `dvc pull` this repository's data), or set train.soft_labels=none"
        )
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        header = [name.strip() for name in reader.fieldnames or []]
        missing = [c for c in ("Usage", *VOTE_COLUMNS) if c not in header]
        if missing:
            raise DataValidationError(path, [("line 1", f"missing column(s) {', '.join(missing)}")])
        reader.fieldnames = header
        rows: list[list[float]] = []
        problems: list[tuple[str, str]] = []
        bad = 0
        for line, row in enumerate(reader, start=2):
            if (row.get("Usage") or "").strip() != usage:
                continue
            votes = []
            for column in VOTE_COLUMNS:
                cell = (row.get(column) or "").strip() or "0"
                if not cell.isdigit():
                    bad += 1
                    if len(problems) < MAX_ERRORS:
                        problems.append((f"line {line}", f"{column}={cell!r} is not a vote count"))
                    break
                votes.append(float(cell))
            else:
                rows.append(votes)
    if bad:
        raise DataValidationError(path, problems, total=bad)
    return np.asarray(rows, dtype=np.float32).reshape(-1, NUM_CLASSES)


def soft_targets(labels: np.ndarray, votes: np.ndarray, weight: float) -> np.ndarray:
    """Mix one-hot FER2013 labels (N,) with normalised FER+ votes (N, 7): float32 (N, 7) rows summing to 1."""
    labels = np.asarray(labels).astype(np.int64)
    votes = np.asarray(votes, dtype=np.float32)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"train.soft_label_weight={weight}: expected a value in 0..1")
    if votes.shape != (len(labels), NUM_CLASSES):
        raise ValueError(
            f"FER+ votes for {votes.shape[0]} training rows but the training split has {len(labels)}: soft "
            "labels need the Kaggle CSV's own rows in their original order (not an image-folder dataset)"
        )
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    totals = votes.sum(axis=1, keepdims=True)
    voted = totals[:, 0] > 0
    agreement = float((votes[voted].argmax(axis=1) == labels[voted]).mean()) if voted.any() else 0.0
    if agreement < MIN_AGREEMENT:
        raise ValueError(
            f"FER+ votes agree with only {agreement:.0%} of the FER2013 labels (expected ~65%): "
            "the votes file does not line up with the training rows"
        )
    crowd = np.where(voted[:, None], votes / np.maximum(totals, 1.0), one_hot)
    return ((1.0 - weight) * one_hot + weight * crowd).astype(np.float32)
