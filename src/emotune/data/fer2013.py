"""Load and validate raw FER2013 in either public format: the Kaggle CSV or the Kaggle image folders.

CSV: header `emotion,pixels,Usage` (any order, names trimmed and case-insensitive, so Kaggle's
`icml_face_data.csv` with `emotion, Usage, pixels` works too), plain or gzip. Each row: a label 0..6, 2304
space-separated integers 0..255 (a 48x48 face, row-major) and a Usage (Training, PublicTest, PrivateTest).

Image folders (Kaggle "msambare/fer2013"): `<root>/<split>/<class>/*.png|jpg`. Usage comes from the file name
prefix when it has one (`Training_*`, `PublicTest_*`, `PrivateTest_*`, as in msambare's files), else from the
split folder: train/training -> Training, test/val/validation/publictest -> PublicTest, privatetest ->
PrivateTest. Class folders are the emotion names (case-insensitive; also disgusted/fearful/surprised or 0..6).
Images of any size or colour go through emotune.preprocess (to_gray + crop_face), the one preprocessing path.

Every problem found is collected; a bad input raises DataValidationError naming the first ones (CSV rows by
their 1-based line number in the file) and nothing downstream gets written.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from emotune.labels import EMOTIONS, NUM_CLASSES
from emotune.preprocess import FACE_SIZE, crop_face, to_gray

PIXELS = FACE_SIZE * FACE_SIZE
COLUMNS = ("emotion", "pixels", "Usage")
USAGES = ("Training", "PublicTest", "PrivateTest")
SPLITS = ("train", "validation", "test")  # index i <-> USAGES[i]
USAGE_TO_SPLIT = dict(zip(USAGES, SPLITS, strict=True))
MAX_ERRORS = 20

SPLIT_FOLDERS = {
    "train": "Training",
    "training": "Training",
    "test": "PublicTest",
    "val": "PublicTest",
    "validation": "PublicTest",
    "publictest": "PublicTest",
    "privatetest": "PrivateTest",
}
CLASS_FOLDERS = {
    **{name: i for i, name in enumerate(EMOTIONS)},
    **{str(i): i for i in range(NUM_CLASSES)},
    "disgusted": 1,
    "fearful": 2,
    "surprised": 5,
}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_USAGE_PREFIX = re.compile(r"^(Training|PublicTest|PrivateTest)_")
_INTEGER = re.compile(r"^[0-9]+$")


class DataValidationError(ValueError):
    """A raw FER2013 input that cannot be used. `problems` holds (where, what) for the first bad entries."""

    def __init__(self, source: Path | str, problems: list[tuple[str, str]], total: int | None = None) -> None:
        self.source = Path(source)
        self.problems = problems
        self.total = len(problems) if total is None else total
        shown = "\n".join(f"  {where}: {what}" for where, what in problems)
        more = f" (showing the first {len(problems)})" if self.total > len(problems) else ""
        super().__init__(f"{source}: {self.total} problem(s){more}:\n{shown}")


@dataclass(frozen=True)
class Fer2013:
    """Validated faces: x uint8 (N, 48, 48), y uint8 (N,) labels 0..6, split uint8 (N,) index into SPLITS."""

    x: np.ndarray
    y: np.ndarray
    split: np.ndarray
    source: Path
    format: str  # "csv" or "image_folder"

    def splits(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """Only the splits that have rows, in SPLITS order, each keeping the file's row order."""
        out = {}
        for i, name in enumerate(SPLITS):
            mask = self.split == i
            if mask.any():
                out[name] = (self.x[mask], self.y[mask])
        return out

    def counts(self) -> dict[str, dict[str, int]]:
        """{split: {emotion: n, ..., "total": n}} for the splits that have rows."""
        out = {}
        for name, (_, y) in self.splits().items():
            per_class = np.bincount(y, minlength=NUM_CLASSES)
            out[name] = {e: int(n) for e, n in zip(EMOTIONS, per_class, strict=True)} | {"total": len(y)}
        return out


def load(path: Path | str, image_size: int = FACE_SIZE, progress: bool = True) -> Fer2013:
    """Either format: a directory is read as image folders, anything else as a (possibly gzipped) CSV."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_dir():
        return load_image_folder(path, image_size=image_size, progress=progress)
    if image_size != FACE_SIZE:
        raise ValueError(f"FER2013 CSV faces are {FACE_SIZE}x{FACE_SIZE}; image_size={image_size} is not")
    return load_csv(path, progress=progress)


def sha256_of(path: Path | str) -> str:
    """A file's sha256, or for a directory one over its sorted relative paths and file contents."""
    path = Path(path)
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as f:
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == b"\x1f\x8b"


def _progress(total: int | None, desc: str, unit: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, mininterval=0.5, disable=not enabled)


def _header_columns(header: list[str], source: Path) -> tuple[int, int, int]:
    names = [h.strip().lower() for h in header]
    wanted = [c.lower() for c in COLUMNS]
    if sorted(names) != sorted(wanted):
        raise DataValidationError(
            source, [("line 1", f"header is {','.join(header)!r}, expected {','.join(COLUMNS)!r}")]
        )
    return tuple(names.index(c) for c in wanted)  # type: ignore[return-value]


def _pixel_problem(text: str) -> str:
    """Why a pixels field that np.fromstring rejected is bad (the slow path, only for bad rows)."""
    tokens = text.split()
    for k, token in enumerate(tokens):
        if not _INTEGER.match(token):
            return f"pixel {k + 1} is {token[:20]!r}, not an integer 0..255"
    return f"unreadable pixels field {text[:40]!r}"


def _check_row(row: list[str], cols: tuple[int, int, int]) -> tuple[int, np.ndarray | None, int, list[str]]:
    """(label, pixels uint8, usage index, problems) for one CSV row."""
    problems: list[str] = []
    if len(row) != len(COLUMNS):
        return -1, None, -1, [f"{len(row)} fields, expected {len(COLUMNS)} ({','.join(COLUMNS)})"]
    label_text, pixel_text, usage_text = (row[i].strip() for i in cols)
    label = int(label_text) if _INTEGER.match(label_text) else -1
    if not _INTEGER.match(label_text):
        problems.append(f"label {label_text[:20]!r} is not an integer")
    elif not 0 <= label < NUM_CLASSES:
        problems.append(f"label {label} is not in 0..{NUM_CLASSES - 1}")
    usage = USAGES.index(usage_text) if usage_text in USAGES else -1
    if usage < 0:
        problems.append(f"unknown Usage {usage_text[:30]!r} (expected one of {', '.join(USAGES)})")
    pixels = None
    try:
        values = np.fromstring(pixel_text, dtype=np.int64, sep=" ")
    except ValueError:
        problems.append(_pixel_problem(pixel_text))
    else:
        if values.size != PIXELS:
            problems.append(f"{values.size} pixel values, expected {PIXELS} ({FACE_SIZE}x{FACE_SIZE})")
        elif values.min() < 0 or values.max() > 255:
            k = int(np.argmax((values < 0) | (values > 255)))
            problems.append(f"pixel {k + 1} is {values[k]}, outside 0..255")
        else:
            pixels = values.astype(np.uint8)
    return label, pixels, usage, problems


def load_csv(path: Path | str, progress: bool = True, max_errors: int = MAX_ERRORS) -> Fer2013:
    """Parse and validate a Kaggle FER2013 CSV (plain or .gz). Raises DataValidationError on any bad row."""
    path = Path(path)
    problems: list[tuple[str, str]] = []
    n_bad = 0
    faces: list[np.ndarray] = []
    labels: list[int] = []
    usages: list[int] = []
    line = 1
    with open(path, "rb") as raw:
        stream = gzip.GzipFile(fileobj=raw, mode="rb") if _is_gzip(path) else raw
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
        bar = _progress(path.stat().st_size, f"reading {path.name}", "B", progress)
        try:
            reader = csv.reader(text)
            header = next(reader, None)
            if header is None:
                raise DataValidationError(path, [("line 1", "empty file: no header")])
            cols = _header_columns(header, path)
            for row in reader:
                line = reader.line_num
                if not row:  # blank line
                    continue
                label, pixels, usage, row_problems = _check_row(row, cols)
                if row_problems:
                    n_bad += 1
                    if len(problems) < max_errors:
                        problems.append((f"line {line}", "; ".join(row_problems)))
                    continue
                faces.append(pixels)
                labels.append(label)
                usages.append(usage)
                if len(labels) % 2000 == 0:
                    bar.update(raw.tell() - bar.n)
            bar.update(raw.tell() - bar.n)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            # Keep the row problems found so far: they may explain the damage.
            problems.append((f"after line {line}", f"truncated or corrupt gzip file ({exc})"))
            raise DataValidationError(path, problems, n_bad + 1) from exc
        except UnicodeDecodeError as exc:
            raise DataValidationError(path, [(f"line {line + 1}", f"not UTF-8 text ({exc.reason})")]) from exc
        except csv.Error as exc:
            raise DataValidationError(path, [(f"line {line + 1}", f"malformed CSV ({exc})")]) from exc
        finally:
            bar.close()
    if n_bad:
        raise DataValidationError(path, problems, n_bad)
    if not labels:
        raise DataValidationError(path, [("line 2", "no data rows after the header")])
    return Fer2013(
        x=np.stack(faces).reshape(-1, FACE_SIZE, FACE_SIZE),
        y=np.asarray(labels, dtype=np.uint8),
        split=np.asarray(usages, dtype=np.uint8),
        source=path,
        format="csv",
    )


def _read_image(file: Path, image_size: int) -> np.ndarray:
    image = cv2.imdecode(np.fromfile(file, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None:
        raise ValueError("not a readable image")
    if image.dtype == np.uint16:
        image = (image >> 8).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] in (3, 4):  # OpenCV decodes to BGR(A); to_gray wants RGB(A)
        image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGBA)
    return crop_face(to_gray(image), None, image_size)


def _visible(paths: Iterable[Path]) -> list[Path]:
    return sorted(p for p in paths if not p.name.startswith("."))


def load_image_folder(
    root: Path | str, image_size: int = FACE_SIZE, progress: bool = True, max_errors: int = MAX_ERRORS
) -> Fer2013:
    """Read `<root>/<split>/<class>/*.png|jpg`; unknown split or class folders, unreadable files: errors."""
    root = Path(root)
    problems: list[tuple[str, str]] = []
    jobs: list[tuple[Path, int, int]] = []  # file, label, usage index
    split_dirs = [p for p in _visible(root.iterdir()) if p.is_dir()]
    for split_dir in split_dirs:
        folder_usage = SPLIT_FOLDERS.get(split_dir.name.lower())
        if folder_usage is None:
            problems.append(
                (
                    str(split_dir),
                    f"unknown split folder {split_dir.name!r} (expected {', '.join(SPLIT_FOLDERS)})",
                )
            )
            continue
        for class_dir in _visible(split_dir.iterdir()):
            label = CLASS_FOLDERS.get(class_dir.name.lower())
            if not class_dir.is_dir():
                problems.append((str(class_dir), "a file outside a class folder"))
                continue
            if label is None:
                problems.append(
                    (
                        str(class_dir),
                        f"unknown class folder {class_dir.name!r} (expected {', '.join(EMOTIONS)})",
                    )
                )
                continue
            for file in _visible(class_dir.iterdir()):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    problems.append((str(file), f"not an image ({', '.join(IMAGE_SUFFIXES)})"))
                    continue
                prefix = _USAGE_PREFIX.match(file.name)
                jobs.append((file, label, USAGES.index(prefix.group(1) if prefix else folder_usage)))
    if not split_dirs:
        problems.append((str(root), "no split folders: expected train/<class>/*.png and test/<class>/*.png"))
    faces = []
    with _progress(len(jobs), f"reading {root.name}/", "img", progress) as bar:
        for file, _, _ in jobs:
            try:
                faces.append(_read_image(file, image_size))
            except (ValueError, cv2.error) as exc:
                problems.append((str(file), str(exc).strip()))
            bar.update()
    if problems:
        raise DataValidationError(root, problems[:max_errors], len(problems))
    if not jobs:
        raise DataValidationError(root, [(str(root), "no images found")])
    return Fer2013(
        x=np.stack(faces),
        y=np.asarray([label for _, label, _ in jobs], dtype=np.uint8),
        split=np.asarray([usage for _, _, usage in jobs], dtype=np.uint8),
        source=root,
        format="image_folder",
    )
