"""`emotune data download`: FER2013 from Kaggle with kagglehub, or a fast, clear failure with the manual way.

Sources (kagglehub handles):
  csv          dataset  deadskull7/fer2013 -> fer2013.csv (all 35,887 rows, PrivateTest included)
  competition  challenges-in-representation-learning-facial-expression-recognition-challenge (accept its rules
               on kaggle.com first) -> fer2013.tar.gz / icml_face_data.csv
  images       dataset  msambare/fer2013 -> train/<class>/*.jpg, test/<class>/*.jpg
A CSV lands validated at data/fer2013/fer2013.csv.gz (the default data.raw_path); image folders at
data/fer2013/images (set data.raw_path to it). Then `dvc add data` records the new version.

No credentials or no network fails within a few seconds (emotune.kaggle).
"""

from __future__ import annotations

import gzip
import shutil
import tarfile
import tempfile
from pathlib import Path

from emotune import kaggle
from emotune.atomic import atomic_output

SOURCES = {
    "csv": ("dataset", "deadskull7/fer2013"),
    "competition": (
        "competition",
        "challenges-in-representation-learning-facial-expression-recognition-challenge",
    ),
    "images": ("dataset", "msambare/fer2013"),
}
CSV_NAMES = ("fer2013.csv", "icml_face_data.csv")
DEFAULT_DEST = Path("data/fer2013")

MANUAL = """\
Get FER2013 by hand instead:
  1. Download the Kaggle CSV (fer2013.csv: header emotion,pixels,Usage) from
     https://www.kaggle.com/datasets/deadskull7/fer2013 or the competition page
     https://www.kaggle.com/c/challenges-in-representation-learning-facial-expression-recognition-challenge
     (or the image folders from https://www.kaggle.com/datasets/msambare/fer2013).
  2. Put it at data/fer2013/fer2013.csv.gz (gzip it) or data/fer2013/fer2013.csv (then set
     data.raw_path in conf/data/fer2013.yaml and run `make params`); image folders go to data/fer2013/images.
  3. Check it:  emotune data validate data/fer2013/fer2013.csv.gz
  4. Version it: dvc add data   (then git add data.dvc && git commit)
Or, with Kaggle credentials and internet: put your API token in ~/.kaggle/kaggle.json (or set
KAGGLE_USERNAME and KAGGLE_KEY) and run `emotune data download` again."""


class DownloadError(RuntimeError):
    """Download impossible or failed; the message says why and how to get the data by hand."""

    def __init__(self, reason: str) -> None:
        super().__init__(f"{reason}\n\n{MANUAL}")


def find_csv(folder: Path) -> Path:
    """The FER2013 CSV inside a downloaded folder, unpacking fer2013.tar.gz (the competition's) if needed."""
    for name in CSV_NAMES:
        found = sorted(folder.rglob(name))
        if found:
            return found[0]
    for archive in sorted(folder.rglob("fer2013.tar.gz")):
        with tarfile.open(archive) as tar:
            member = next((m for m in tar.getmembers() if m.name.endswith("fer2013.csv")), None)
            if member is not None:
                tar.extract(member, archive.parent, filter="data")
                return archive.parent / member.name
    raise DownloadError(f"no {' or '.join(CSV_NAMES)} (or fer2013.tar.gz) in the download at {folder}")


def install_csv(csv_path: Path, dest: Path) -> Path:
    """Validate a FER2013 CSV and store it gzipped (reproducibly: no name or time in the header) at dest."""
    from emotune.data.fer2013 import load_csv

    load_csv(csv_path)  # raises DataValidationError before anything is written
    with (
        atomic_output(dest) as tmp,
        open(csv_path, "rb") as src,
        open(tmp, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
    ):
        shutil.copyfileobj(src, gz, 1 << 20)
    return dest


def download(
    source: str = "csv", dest_dir: Path | str = DEFAULT_DEST, timeout: float = 3.0, force: bool = False
) -> Path:
    """Fetch FER2013 with kagglehub into dest_dir; returns the path to use as data.raw_path."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; choose one of {', '.join(SOURCES)}")
    dest_dir = Path(dest_dir)
    target = dest_dir / ("images" if source == "images" else "fer2013.csv.gz")
    if target.exists() and not force:
        raise DownloadError(f"{target} already exists (use --force to replace it)")
    kind, handle = SOURCES[source]
    try:
        folder = kaggle.fetch(kind, handle, timeout=timeout)
    except kaggle.KaggleError as exc:
        raise DownloadError(str(exc)) from exc

    if source != "images":
        return install_csv(find_csv(folder), target)
    return install_image_folder(folder, target)


def install_image_folder(folder: Path, dest: Path) -> Path:
    """Validate FER2013 image folders (`<split>/<class>/*.png`) and copy them to dest, replacing what was
    there only once the copy is complete."""
    # The prepare stage's two-rename swap: a failure never leaves the old folder deleted and the new one
    # missing. (It belongs in emotune.atomic; prepare.py is a DVC dependency: it moves at its next change.)
    from emotune.atomic import replace_dir
    from emotune.data.fer2013 import load_image_folder

    load_image_folder(folder, progress=False)  # raises DataValidationError before anything is written
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    try:
        shutil.copytree(folder, tmp, dirs_exist_ok=True)
        replace_dir(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # there only when the copy failed
    return dest
