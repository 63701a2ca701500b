"""Small SYNTHETIC FER2013-format data for tests and smoke runs: procedural cartoon faces, never real results.

Each face is an oval with eyes, brows, nose and mouth drawn with OpenCV. The expression sets the features
(mouth curve and openness, brow slant and height, eye opening, a raised lip corner for disgust); pose,
size, lighting, blur and noise are jittered so a model has to learn the features, not the pixels.

The Kaggle CSV format has no room for a "synthetic" marker, so the file name must say it (enforced here) and
the pipeline's `data.synthetic` flag labels every report built from it.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emotune.atomic import atomic_output
from emotune.data.fer2013 import COLUMNS, USAGES
from emotune.data.ferplus import VOTE_COLUMNS
from emotune.labels import EMOTIONS, NUM_CLASSES
from emotune.preprocess import FACE_SIZE

SCALE = 2  # draw at 2x and shrink, for anti-aliased features
MIN_ROWS = 3 * NUM_CLASSES  # one face per class in each of the three splits


@dataclass(frozen=True)
class Expression:
    mouth_curve: float  # + smile, - frown (canvas pixels at the corners relative to the middle)
    mouth_open: float  # height of the open mouth; 0 = closed line
    mouth_width: float
    brow_slant: float  # + inner ends up (sad, fear), - inner ends down (angry)
    brow_raise: float
    eye_open: float  # eye height
    lip_raise: float = 0.0  # one corner up: disgust's sneer


EXPRESSIONS: dict[str, Expression] = {
    "angry": Expression(
        mouth_curve=-3, mouth_open=0, mouth_width=12, brow_slant=-7, brow_raise=-3, eye_open=3
    ),
    "disgust": Expression(
        mouth_curve=-2, mouth_open=0, mouth_width=14, brow_slant=-3, brow_raise=-2, eye_open=2.5, lip_raise=8
    ),
    "fear": Expression(mouth_curve=-1, mouth_open=6, mouth_width=22, brow_slant=5, brow_raise=5, eye_open=7),
    "happy": Expression(
        mouth_curve=9, mouth_open=2, mouth_width=20, brow_slant=0, brow_raise=1, eye_open=3.5
    ),
    "sad": Expression(mouth_curve=-8, mouth_open=0, mouth_width=16, brow_slant=6, brow_raise=0, eye_open=3.5),
    "surprise": Expression(
        mouth_curve=0, mouth_open=14, mouth_width=14, brow_slant=0, brow_raise=8, eye_open=7
    ),
    "neutral": Expression(
        mouth_curve=0, mouth_open=0, mouth_width=16, brow_slant=0, brow_raise=0, eye_open=4.5
    ),
}
assert tuple(EXPRESSIONS) == EMOTIONS


def _pt(x: float, y: float) -> tuple[int, int]:
    return round(x), round(y)


def draw_face(label: int, rng: np.random.Generator) -> np.ndarray:
    """One uint8 48x48 face showing EMOTIONS[label], with random pose, lighting and noise."""
    size = FACE_SIZE * SCALE
    ex = EXPRESSIONS[EMOTIONS[label]]
    j = lambda s: rng.normal(0.0, s)  # noqa: E731 - jitter
    background = rng.uniform(20, 230)
    canvas = np.full((size, size), background, np.float32)
    canvas += np.linspace(-1, 1, size)[None, :] * rng.uniform(-30, 30)  # side lighting
    skin = rng.uniform(110, 220)
    if abs(skin - background) < 40:
        skin = background + 60 if background < 140 else background - 70
    dark = max(0.0, skin - rng.uniform(80, 110))

    cx, cy = size / 2 + j(3), size / 2 + 4 + j(3)
    zoom = rng.uniform(0.9, 1.1)
    cv2.ellipse(canvas, _pt(cx, cy), _pt(34 * zoom, 42 * zoom), j(5), 0, 360, float(skin), -1, cv2.LINE_AA)

    # Coordinates below are relative to the face centre, in canvas pixels at zoom 1.
    def p(dx: float, dy: float) -> tuple[int, int]:
        return _pt(cx + dx * zoom, cy + dy * zoom)

    eye_dx, eye_y = 14 + j(1), -10 + j(1.5)
    eye_h = max(1.0, ex.eye_open + j(0.6))
    brow_y = eye_y - 10 - ex.brow_raise + j(1)
    slant = ex.brow_slant + j(1)
    thickness = int(rng.integers(2, 4))
    for side in (-1, 1):
        ex_x = side * eye_dx
        cv2.ellipse(
            canvas, p(ex_x, eye_y), _pt(6 * zoom, eye_h * zoom), 0, 0, 360, float(dark), -1, cv2.LINE_AA
        )
        inner, outer = p(ex_x - side * 7, brow_y - slant / 2), p(ex_x + side * 8, brow_y + slant / 2)
        cv2.line(canvas, inner, outer, float(dark), thickness, cv2.LINE_AA)
    cv2.line(canvas, p(0, -2), p(j(1), 8), float(dark + 20), 2, cv2.LINE_AA)  # nose
    if ex.lip_raise:  # disgust also wrinkles the nose
        for dy in (0, 4):
            cv2.line(canvas, p(-5, dy - 2), p(5, dy), float(dark + 30), 1, cv2.LINE_AA)

    mouth_y, half = 22 + j(1.5), (ex.mouth_width + j(1.5)) / 2
    curve, opening = ex.mouth_curve + j(1.2), max(0.0, ex.mouth_open + j(1))
    xs = np.linspace(-half, half, 15)
    t = xs / half
    middle = mouth_y - curve * t**2 - ex.lip_raise * np.clip(rng.choice([-1, 1]) * t, 0, None) ** 2
    upper, lower = middle - opening / 2 * (1 - t**2), middle + opening / 2 * (1 - t**2)
    outline = [p(x, y) for x, y in zip(xs, upper, strict=True)] + [
        p(x, y) for x, y in zip(xs[::-1], lower[::-1], strict=True)
    ]
    if opening > 1.5:
        cv2.fillPoly(canvas, [np.array(outline, np.int32)], float(dark * 0.5), cv2.LINE_AA)
    else:
        cv2.polylines(canvas, [np.array(outline[:15], np.int32)], False, float(dark), 2, cv2.LINE_AA)

    rotation = cv2.getRotationMatrix2D((size / 2, size / 2), j(6), 1.0)
    canvas = cv2.warpAffine(canvas, rotation, (size, size), borderMode=cv2.BORDER_REPLICATE)
    canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.5, 1.5))
    face = cv2.resize(canvas, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
    face += rng.normal(0, rng.uniform(3, 10), face.shape)
    return np.clip(np.rint(face), 0, 255).astype(np.uint8)


def generate(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(x uint8 (rows, 48, 48), y uint8 (rows,), usage index (rows,)): balanced classes, every class in each
    split (about 80% Training, 10% PublicTest, 10% PrivateTest), rows in a seeded random order."""
    rng = np.random.default_rng(seed)
    y, usage = layout(rows, rng)
    x = np.stack([draw_face(int(label), rng) for label in y])
    return x, y, usage


def layout(rows: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(labels, usage indices) of `rows` synthetic faces, in their seeded file order."""
    if rows < MIN_ROWS:
        raise ValueError(f"need at least {MIN_ROWS} rows (every class in each of the 3 splits), got {rows}")
    y = np.arange(rows) % NUM_CLASSES
    usage = np.zeros(rows, np.uint8)
    for label in range(NUM_CLASSES):
        idx = np.flatnonzero(y == label)
        n_held = max(1, round(0.1 * len(idx)))
        usage[idx[-2 * n_held : -n_held]] = 1  # PublicTest
        usage[idx[-n_held:]] = 2  # PrivateTest
    order = rng.permutation(rows)
    return y[order].astype(np.uint8), usage[order]


def to_csv_text(x: np.ndarray, y: np.ndarray, usage: np.ndarray) -> str:
    """The Kaggle CSV bytes (as text) for faces, labels and usage indices."""
    words = [str(v) for v in range(256)]
    lines = [",".join(COLUMNS)]
    for face, label, u in zip(x, y, usage, strict=True):
        lines.append(f"{label},{' '.join(words[v] for v in face.ravel().tolist())},{USAGES[u]}")
    return "\n".join(lines) + "\n"


def synthesize(out: Path | str, rows: int, seed: int = 0) -> Path:
    """Write `rows` synthetic faces as a Kaggle-format CSV (gzip when it ends in .gz), atomically and
    byte-for-byte reproducibly for a given seed. The file name must contain "synthetic"."""
    out = Path(out)
    if "synthetic" not in out.name.lower():
        raise ValueError(
            f"synthetic data must say so in its file name (e.g. fer2013_synthetic.csv), got {out.name}"
        )
    data = to_csv_text(*generate(rows, seed)).encode()
    if out.name.endswith(".gz"):
        data = gzip.compress(data, mtime=0)
    with atomic_output(out) as tmp:
        tmp.write_bytes(data)
    return out


def synthesize_votes(out: Path | str, rows: int, seed: int = 0) -> Path:
    """FER+-format annotator votes for the faces `synthesize(rows=rows, seed=seed)` writes, row for row:
    ten votes per face, seven or more for its label and the rest for one other emotion, so that soft-label
    training can run on synthetic data. The file name must contain "synthetic"."""
    out = Path(out)
    if "synthetic" not in out.name.lower():
        raise ValueError(f"synthetic votes must say so in their file name, got {out.name}")
    labels, usage = layout(rows, np.random.default_rng(seed))
    rng = np.random.default_rng([seed, 1])
    columns = (
        "neutral",
        "happiness",
        "surprise",
        "sadness",
        "anger",
        "disgust",
        "fear",
        "contempt",
        "unknown",
        "NF",
    )
    lines = [",".join(("Usage", "Image name", *columns))]
    for row, (label, u) in enumerate(zip(labels, usage, strict=True)):
        votes = dict.fromkeys(columns, 0)
        other = (int(label) + int(rng.integers(1, NUM_CLASSES))) % NUM_CLASSES
        minority = int(rng.integers(0, 4))
        votes[VOTE_COLUMNS[int(label)]] = 10 - minority
        votes[VOTE_COLUMNS[other]] += minority
        lines.append(",".join((USAGES[u], f"fer{row:07d}.png", *(str(votes[c]) for c in columns))))
    with atomic_output(out) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return out
