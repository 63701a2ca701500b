"""Faces and models for the inference and serving tests, made here: no network, no ../shared needed.

The face is a real photograph that ships inside matplotlib (Grace Hopper, mpl-data/sample_data): OpenCV's
Haar cascade finds it reliably, which drawn cartoon faces do not guarantee.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib import cbook
from PIL import Image

from emotune.preprocess import FACE_SIZE, crop_face, to_gray

GRACE_HOPPER = Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
GRACE_FACE_BOX = (155, 105, 222, 222)  # where the Haar cascade finds her face in the 512x600 photo


def photo_rgb() -> np.ndarray:
    return np.asarray(Image.open(GRACE_HOPPER).convert("RGB"))


def fer_like_face() -> np.ndarray:
    """A FER2013-style row: her face as a 48x48 uint8 grey crop (the tight box, like FER2013's crops)."""
    return crop_face(to_gray(photo_rgb()), GRACE_FACE_BOX)


def paste(
    face: np.ndarray, size: tuple[int, int] = (480, 640), at: tuple[int, int] = (200, 100), scale: int = 3
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """A grey RGB frame with `face` enlarged `scale` times (pixel replication) at (x, y), and its box."""
    big = np.kron(face, np.ones((scale, scale), dtype=np.uint8))
    frame = np.full((*size, 3), 128, np.uint8)
    x, y = at
    frame[y : y + big.shape[0], x : x + big.shape[1]] = big[..., None]
    return frame, (x, y, big.shape[1], big.shape[0])


def encode(rgb: np.ndarray, fmt: str = "PNG", **kwargs) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def export_tiny_model(out_dir: Path, precision: str = "float16") -> Path:
    """An untrained small_cnn, exported by the promote stage's own export and card code (never committed)."""
    import keras

    from emotune import export, model_card
    from emotune.model import build_model

    keras.utils.set_random_seed(0)
    model = build_model({"name": "small_cnn", "width": 0.25, "dense_units": 32}, FACE_SIZE)
    files = export.export_serving_files(model, out_dir, precision)
    files.pop("reference").unlink()
    model_card.write_card(
        model_card.build_card(name="emotune-fer", precision=precision, files=files), out_dir
    )
    return out_dir


def tiny_model_dir(tmp_path_factory) -> Path:
    """One tiny exported model per test session, shared by the modules that need it."""
    path = tmp_path_factory.getbasetemp() / "tiny-models"
    if not (path / "model_card.json").is_file():
        path.mkdir(exist_ok=True)
        export_tiny_model(path)
    return path


WRITE_AUDIT = Path(__file__).resolve().parent / "write_audit"


def write_audit_env(log: Path) -> dict[str, str]:
    """Environment for a server whose processes log each file they open for writing to `log`
    (tests/helpers/write_audit/sitecustomize.py)."""
    return {"PYTHONPATH": str(WRITE_AUDIT), "WRITE_AUDIT_LOG": str(log)}


def written_since(log: Path, offset: int) -> list[str]:
    """The paths in a write-audit `log` after byte `offset` (see `write_audit_env`)."""
    return [line.split(" ", 2)[2] for line in log.read_bytes()[offset:].decode().splitlines()]
