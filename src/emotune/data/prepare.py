"""The `prepare` stage: raw FER2013 -> one compact, validated, reproducible array file per split.

Output directory (written atomically: a temp directory beside it, then renamed):
  train.npz, validation.npz[, test.npz]  arrays x uint8 (N, 48, 48) and y uint8 (N,); test only when the raw
                                         data has PrivateTest rows
  report.json                            counts per split and class, source file and sha256, synthetic flag
  class_distribution.png                 the same counts as a bar chart

Same input -> byte-identical output (fixed zip timestamps, no dates in the report or the PNG), so DVC sees
no change on a rerun.
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from emotune.atomic import replace_dir
from emotune.data.fer2013 import SPLITS, Fer2013, load, sha256_of
from emotune.data.splits import choose_split
from emotune.labels import EMOTIONS
from emotune.preprocess import FACE_SIZE

log = logging.getLogger(__name__)

REPORT = "report.json"
PLOT = "class_distribution.png"
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold; any fixed value makes the bytes stable


def save_npz(path: Path | str, **arrays: np.ndarray) -> None:
    """Like np.savez_compressed (np.load reads it) but byte-for-byte reproducible: fixed member timestamps."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=array.nbytes > 2**31) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)


def load_prepared(prepared_dir: Path | str) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{split: (x uint8 (N, 48, 48), y uint8 (N,))} for the splits that were prepared, in SPLITS order."""
    prepared_dir = Path(prepared_dir)
    out = {}
    for split in SPLITS:
        path = prepared_dir / f"{split}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                out[split] = (data["x"], data["y"])
    if "train" not in out:
        raise FileNotFoundError(
            f"{prepared_dir}/train.npz not found: run the prepare stage (dvc repro prepare)"
        )
    return out


def build_report(data: Fer2013, raw_path: Path | str, synthetic: bool, sha256: str) -> dict[str, Any]:
    counts = data.counts()
    missing = [s for s in SPLITS if s not in counts]
    split, note = choose_split(counts)  # what the evaluate stage will use, and why
    notes = [note] if split != "test" else []
    if synthetic:
        notes.insert(0, "SYNTHETIC data (procedurally drawn faces): not a FER2013 result")
    return {
        "synthetic": bool(synthetic),
        "source": str(raw_path),
        "source_format": data.format,
        "source_sha256": sha256,
        "classes": list(EMOTIONS),
        "image_size": FACE_SIZE,
        "rows": len(data.y),
        "counts": counts,
        "missing_splits": missing,
        "evaluation_split": split,
        "notes": notes,
    }


def plot_distribution(report: dict[str, Any], path: Path | str) -> None:
    """Grouped bars: faces per class, one bar per split."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = report["counts"]
    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    width = 0.8 / max(1, len(counts))
    xs = np.arange(len(EMOTIONS))
    for i, (split, per_class) in enumerate(counts.items()):
        values = [per_class[e] for e in EMOTIONS]
        bars = ax.bar(
            xs + (i - (len(counts) - 1) / 2) * width, values, width, label=f"{split} ({per_class['total']})"
        )
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(xs, EMOTIONS)
    ax.set_ylabel("faces")
    title = f"Class distribution: {Path(report['source']).name}"
    ax.set_title(title + (" [SYNTHETIC]" if report["synthetic"] else ""))
    ax.legend()
    fig.tight_layout()
    # No "Software" entry: the PNG then depends only on the counts, not the matplotlib version.
    fig.savefig(path, format="png", metadata={"Software": None})


def prepare(
    raw_path: Path | str,
    out_dir: Path | str,
    synthetic: bool = False,
    image_size: int = FACE_SIZE,
    progress: bool = True,
) -> dict[str, Any]:
    """Validate raw FER2013 (CSV or image folders) and write the per-split arrays, report and plot.

    Raises DataValidationError (nothing written) for bad data, FileNotFoundError with the ways to get data
    when `raw_path` is missing, and ValueError when a synthetic-looking file is not flagged `synthetic`.
    """
    raw_path, out_dir = Path(raw_path), Path(out_dir)
    if not raw_path.exists():
        raise FileNotFoundError(
            f"raw data {raw_path} not found. Get FER2013 with `emotune data download` (Kaggle credentials) "
            "or "
            "put the Kaggle CSV at data/fer2013/fer2013.csv.gz by hand; for a smoke run generate synthetic "
            "data with `emotune data synthesize` and use experiment=smoke."
        )
    if "synthetic" in raw_path.name.lower() and not synthetic:
        raise ValueError(f"{raw_path} is synthetic data but data.synthetic is false: set data.synthetic=true")
    if synthetic:
        log.warning(
            "WARNING: preparing SYNTHETIC data from %s; nothing trained on it is a FER2013 result", raw_path
        )
    data = load(raw_path, image_size=image_size, progress=progress)  # raises before anything is written
    report = build_report(data, raw_path, synthetic, sha256_of(raw_path))
    if report["missing_splits"] == ["test"]:
        log.warning(
            "no PrivateTest rows in %s: no test.npz; evaluation will use PublicTest (validation)", raw_path
        )

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)  # mkdtemp makes it private; the output is not
        for split, (x, y) in data.splits().items():
            save_npz(tmp / f"{split}.npz", x=x, y=y)
        (tmp / REPORT).write_text(json.dumps(report, indent=2) + "\n")
        plot_distribution(report, tmp / PLOT)
        replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("prepared %d faces from %s into %s: %s", report["rows"], raw_path, out_dir, _summary(report))
    return report


def prepare_stage(cfg: Any) -> dict[str, Any]:
    """The DVC `prepare` stage: data.raw_path -> paths.prepared, as data.synthetic and data.image_size say.
    Returns the data report."""
    return prepare(
        cfg.data.raw_path,
        cfg.paths.prepared,
        synthetic=bool(cfg.data.synthetic),
        image_size=int(cfg.data.image_size),
    )


def _summary(report: dict[str, Any]) -> str:
    return ", ".join(f"{split} {c['total']}" for split, c in report["counts"].items())
