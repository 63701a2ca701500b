"""What every benchmark shares: run sizes, timing, the machine, the faces, the scenes, the tables."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from emotune.preprocess import FACE_SIZE, Box

REPO = Path(__file__).resolve().parents[1]
SHARED_DIR = Path(os.environ.get("EMOTUNE_SHARED_DIR", REPO.parent / "shared"))
FER2013_CSV = "data/fer2013/fer2013.csv.gz"
FRAME_SIZE = (480, 640)  # height, width


@dataclass(frozen=True)
class SceneSet:
    """Frames with `per_frame` faces each, every face enlarged to a side within `sides` (pixels)."""

    per_frame: int
    sides: tuple[int, int]

    @property
    def label(self) -> str:
        return f"{self.per_frame} x {self.sides[0]}-{self.sides[1]} px"


# A webcam user's face (110-160 px, one and three to a frame), and faces near the detector's 50 px minimum,
# which a frame shrunk too far misses (emotune.vision).
SCENE_SETS = (SceneSet(1, (110, 160)), SceneSet(3, (110, 160)), SceneSet(2, (50, 90)))


@dataclass(frozen=True)
class Sizes:
    """How much work each figure does: quick (CI, < 60 s, small model) or full (the published numbers)."""

    name: str
    repeats: int  # timed runs per figure (the table shows their median)
    # Figure 1's recipes, (label, Hydra overrides): the one before and the one after (the bundled recipe)
    train_recipes: tuple[tuple[str, tuple[str, ...]], tuple[str, tuple[str, ...]]]
    train_warmup_steps: int
    train_steps_per_run: int
    batch1_faces: int  # faces classified one at a time per timed run
    batch64_calls: int  # calls of 64 faces per timed run
    frames: int  # frames per scene set (SCENE_SETS)
    service_requests: int  # requests per timed run and workload
    service_seconds: float  # ... or fewer when a run takes longer than this
    paced_rates: tuple[float, ...]  # /analyze at 10 clients that each send this many requests/s at most
    batching_modes: tuple[bool, ...]
    detection_free: bool  # one more server: /analyze at 10 clients with detection skipped (its floor)
    accuracy_rows: int | None  # PublicTest rows (None: all)


SMALL_TRAIN_MODEL = ("model.name=small_cnn", "model.width=0.25", "model.dense_units=32")
# The previous bundled recipe as overrides of the current one: three grey channels, the whole face, Adam.
BUNDLED_V4 = (
    "model.channels=3",
    "model.crop=null",
    "train.optimizer=adam",
    "train.learning_rate=0.001",
    "train.weight_decay=null",
)

QUICK = Sizes(
    name="quick",
    repeats=2,
    train_recipes=(
        ("small CNN, 3 channels, 48x48", (*SMALL_TRAIN_MODEL, "model.channels=3", "model.crop=null")),
        ("small CNN, 1 channel, 44x44 crops", (*SMALL_TRAIN_MODEL, "model.channels=1", "model.crop=44")),
    ),
    train_warmup_steps=2,
    train_steps_per_run=1,
    batch1_faces=16,
    batch64_calls=1,
    frames=3,
    service_requests=20,
    service_seconds=10,
    paced_rates=(2.0,),
    batching_modes=(True,),  # one server start: CI time (the full run compares on and off)
    detection_free=False,
    accuracy_rows=256,
)
FULL = Sizes(
    name="full",
    repeats=5,
    train_recipes=(
        ("bundled v4: 3 channels, 48x48, Adam", BUNDLED_V4),
        ("bundled: 1 channel, 44x44 crops, SGD", ()),
    ),
    train_warmup_steps=6,
    train_steps_per_run=8,
    batch1_faces=200,
    batch64_calls=5,
    frames=30,
    service_requests=200,
    service_seconds=15,
    paced_rates=(1.0, 2.0, 3.0),
    batching_modes=(True, False),
    detection_free=True,
    accuracy_rows=None,
)


# --- timing -------------------------------------------------------------------------------------------------


def rates(fn: Callable[[], Any], items: int, repeats: int, warmup: int = 1) -> list[float]:
    """items/s of each of `repeats` timed calls of `fn` (after `warmup` untimed calls)."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(items / (time.perf_counter() - start))
    return out


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def ratio(a: float | None, b: float | None) -> float | None:
    return None if not a or not b else a / b


# --- the machine --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _mem_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def dist_version(dist: str) -> str | None:
    """The installed version of a distribution on the current sys.path, None when it is not installed."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores; steal counts as busy)."""
    ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")  # minus idle and iowait


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and of its children that have ended (the `bentoml serve` trees)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class CpuWatch:
    """How much of the machine other processes used while the benchmarks ran: the busy CPU time of the
    machine minus our own (this process, its load client, and the servers it started and stopped)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        try:
            self.busy0, self.own0 = _busy_cpu_seconds(), _own_cpu_seconds()
        except (OSError, ValueError, IndexError):
            self.busy0 = None

    def others(self) -> float | None:
        """The share of all cores' time used by others since the watch started (0..1), None if unknown."""
        if self.busy0 is None:
            return None
        wall = (time.monotonic() - self.start) * (os.cpu_count() or 1)
        others = (_busy_cpu_seconds() - self.busy0) - (_own_cpu_seconds() - self.own0)
        return round(min(1.0, max(0.0, others / wall)), 3) if wall > 0 else None


def machine() -> dict[str, Any]:
    """What the numbers were measured on (they mean little without it), and how busy it was at the start."""
    from emotune.training import resolve_precision

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    packages = ("tensorflow-cpu", "tensorflow", "keras", "onnxruntime", "opencv-python-headless", "bentoml")
    return {
        "cpu": _cpu_model(),
        "cores": cores,
        "memory_gib": _mem_gib(),
        "gpu": None,  # CPU-only TensorFlow and onnxruntime's CPU provider
        "fast_bfloat16": resolve_precision("auto") == "mixed_bfloat16",
        "os": platform.platform(terse=True),
        "python": platform.python_version(),
        "load_average_at_start": [round(v, 2) for v in os.getloadavg()],
        "versions": {p: v for p in packages if (v := dist_version(p))},
    }


def describe(m: dict[str, Any]) -> str:
    bf16 = "bfloat16 hardware" if m["fast_bfloat16"] else "no bfloat16 hardware"
    return f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB RAM, no GPU, {bf16}; {m['os']}"


# --- faces --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Faces:
    x: np.ndarray  # uint8 (N, 48, 48)
    y: np.ndarray  # uint8 (N,) labels
    source: str
    real: bool  # FER2013 PublicTest rows (False: synthetic drawings, accuracy is then skipped)


def load_faces(cache_dir: Path, synthetic_rows: int = 700) -> Faces:
    """FER2013 PublicTest (from ../shared, cached as .npz beside the results), else synthetic faces."""
    csv = SHARED_DIR / FER2013_CSV
    if csv.is_file():
        stat = csv.stat()
        cache = cache_dir / f"publictest-{stat.st_size}-{stat.st_mtime_ns}.npz"
        if cache.is_file():
            with np.load(cache) as f:
                return Faces(f["x"], f["y"], f"{csv} (PublicTest, cached)", True)
        from emotune.atomic import atomic_output
        from emotune.data.fer2013 import load_csv

        x, y = load_csv(csv, progress=False).splits()["validation"]  # validation = PublicTest
        cache_dir.mkdir(parents=True, exist_ok=True)
        with atomic_output(cache) as tmp, open(tmp, "wb") as f:
            np.savez(f, x=x, y=y)
        return Faces(x, y, f"{csv} (PublicTest)", True)
    from emotune.data.synthetic import generate

    x, y, _ = generate(synthetic_rows, seed=0)
    return Faces(x, y, f"synthetic ({synthetic_rows} drawn faces; {csv} not found)", False)


# --- scenes: FER2013 faces placed in 640x480 frames ---------------------------------------------------------


def _background(rng: np.random.Generator) -> np.ndarray:
    """A smooth random colour field with a few blocks: a cluttered scene, not a flat grey card."""
    height, width = FRAME_SIZE
    low = rng.integers(40, 220, (6, 8, 3)).astype(np.float32)
    frame = cv2.resize(low, (width, height), interpolation=cv2.INTER_CUBIC)
    for _ in range(6):
        x, y = int(rng.integers(0, width - 60)), int(rng.integers(0, height - 60))
        w, h = int(rng.integers(20, 160)), int(rng.integers(20, 160))
        frame[y : y + h, x : x + w] = rng.integers(30, 230, 3)
    frame += rng.normal(0, 4, frame.shape).astype(np.float32)
    return np.clip(frame, 0, 255).astype(np.uint8)


def make_scenes(
    faces: np.ndarray, frames: int, per_frame: int, seed: int = 0, sides: tuple[int, int] = (110, 160)
) -> tuple[list[np.ndarray], list[list[Box]]]:
    """`frames` RGB 640x480 frames, each with `per_frame` different faces enlarged to `sides` (min, max) px,
    one per vertical band (so they never overlap), and the true box of each face."""
    rng = np.random.default_rng(seed)
    height, width = FRAME_SIZE
    band = width // per_frame
    order = rng.permutation(len(faces))
    out, boxes = [], []
    for i in range(frames):
        frame = _background(rng)
        truth: list[Box] = []
        for j in range(per_frame):
            face = faces[order[(i * per_frame + j) % len(faces)]]
            side = int(rng.integers(sides[0], min(sides[1], band - 10) + 1))
            x = j * band + int(rng.integers(0, band - side + 1))
            y = int(rng.integers(0, height - side + 1))
            big = cv2.resize(face, (side, side), interpolation=cv2.INTER_CUBIC)
            frame[y : y + side, x : x + side] = big[..., None]
            truth.append((x, y, side, side))
        out.append(frame)
        boxes.append(truth)
    return out, boxes


def iou(a: Box, b: Box) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = w * h
    return inter / float(aw * ah + bw * bh - inter) if inter else 0.0


def match(truth: Sequence[Sequence[Box]], found: Sequence[Sequence[Box]], threshold: float = 0.3) -> dict:
    """Face-detection recall (true faces with a detection of IoU >= threshold) and false detections."""
    hits = false = total = 0
    for true_boxes, boxes in zip(truth, found, strict=True):
        unused = list(boxes)
        for t in true_boxes:
            total += 1
            best = max(unused, key=lambda b: iou(t, b), default=None)
            if best is not None and iou(t, best) >= threshold:
                hits += 1
                unused.remove(best)
        false += len(unused)
    return {
        "faces": total,
        "found": hits,
        "recall": hits / total if total else 0.0,
        "false detections": false,
    }


def face_size_note() -> str:
    return f"FER2013 {FACE_SIZE}x{FACE_SIZE} faces enlarged to the row's size in 640x480 scenes"


# --- tables -------------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        if abs(value) >= 100:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def markdown_table(columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join(" --- " for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(row.get(c)) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
