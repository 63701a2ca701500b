"""Face detection on full frames.

The default detector is OpenCV's bundled frontal-face Haar cascade (`alt2`): it ships inside opencv-python
4.x, so it works offline with no model download, and it finds more faces than the `default` cascade for a
little more time. It runs on a downscaled grayscale copy of the frame and reports boxes in full-frame pixels.

How far to shrink trades small faces for time, because OpenCV scans the pyramid levels where the window is
less than twice the cascade's own (20 px) with a stride of 2 pixels, and finds fewer of the faces that fall
on those levels. The shrink, the pyramid step and the neighbours below were chosen together on
benchmark-style scenes: the measurements are in docs/serving.md, "Face detection settings".
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any, Protocol

import cv2
import numpy as np

from emotune.preprocess import Box, to_gray

HAAR_CASCADE = "haarcascade_frontalface_alt2.xml"
_CASCADE_WINDOW = 24  # the smallest face looked for in the shrunk frame (alt2's own window is 20 px)
# The `fer` package's minimum too. A minimum under 24 / downscale (37 px) shrinks the frame less, which costs
# time, for faces far smaller than a webcam user's (docs/serving.md, "Face detection settings").
DEFAULT_MIN_FACE_SIZE = 50
# The three below were chosen together on 600 benchmark-style scenes (module docstring, docs/serving.md).
DEFAULT_DOWNSCALE = 0.65
# The cascade's pyramid step: a finer one finds a few more faces for much more time (docs/serving.md).
DEFAULT_SCALE_FACTOR = 1.15
# Overlapping hits a detection needs. 3 instead of OpenCV's usual 5 wins back the faces the coarser step
# misses, with fewer false detections than fer's cascade at 5.
DEFAULT_MIN_NEIGHBORS = 3


class FaceDetector(Protocol):
    def detect(self, image: np.ndarray) -> list[Box]:
        """Face boxes (x, y, w, h) in the pixels of `image` (RGB or grayscale uint8), largest first."""
        ...


def haar_cascade_path() -> Path:
    path = Path(cv2.data.haarcascades) / HAAR_CASCADE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: opencv-python(-headless) 5.x no longer ships Haar cascades; install 4.x"
        )
    return path


class HaarFaceDetector:
    """OpenCV Haar cascade. One classifier per thread: detectMultiScale is not documented as thread-safe."""

    def __init__(
        self,
        min_face_size: int = DEFAULT_MIN_FACE_SIZE,
        downscale: float = DEFAULT_DOWNSCALE,
        scale_factor: float = DEFAULT_SCALE_FACTOR,
        min_neighbors: int = DEFAULT_MIN_NEIGHBORS,
    ) -> None:
        if not 0 < downscale <= 1:
            raise ValueError(f"downscale must be in (0, 1], got {downscale}")
        self.min_face_size = int(min_face_size)
        self.downscale = float(downscale)
        self.scale_factor = float(scale_factor)
        self.min_neighbors = int(min_neighbors)
        self._path = str(haar_cascade_path())
        self._local = threading.local()
        self._classifier()  # fail now, not on the first frame

    def _classifier(self) -> cv2.CascadeClassifier:
        classifier = getattr(self._local, "classifier", None)
        if classifier is None:
            classifier = cv2.CascadeClassifier(self._path)
            if classifier.empty():
                raise RuntimeError(f"OpenCV could not load the Haar cascade {self._path}")
            self._local.classifier = classifier
        return classifier

    def detect(self, image: np.ndarray) -> list[Box]:
        gray = to_gray(image)
        height, width = gray.shape
        # Never shrink so far that the smallest wanted face drops below the cascade window.
        scale = min(1.0, max(self.downscale, _CASCADE_WINDOW / max(1, self.min_face_size)))
        min_side = max(_CASCADE_WINDOW, round(self.min_face_size * scale))
        # Checked before resizing: a 1-pixel-high frame would shrink to nothing, which OpenCV refuses.
        if min(height, width) * scale < min_side:
            return []
        small = gray
        if scale < 1.0:
            small = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        # No histogram equalisation: the cascade was trained on unequalised faces, and equalising lost faces
        # on the benchmark scenes (docs/serving.md).
        found = self._classifier().detectMultiScale(
            small,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(min_side, min_side),
        )
        boxes: list[Box] = []
        for x, y, w, h in np.asarray(found, dtype=np.float64).reshape(-1, 4) / scale:
            x0, y0 = max(0, round(x)), max(0, round(y))
            x1, y1 = min(width, round(x + w)), min(height, round(y + h))
            if x1 > x0 and y1 > y0:
                boxes.append((x0, y0, x1 - x0, y1 - y0))
        return sorted(boxes, key=lambda b: b[2] * b[3], reverse=True)


DETECTORS = ("haar",)


def make_detector(
    name: str = "haar", min_face_size: int = DEFAULT_MIN_FACE_SIZE, **kwargs: float
) -> FaceDetector:
    """The detector named in `serve.detector`."""
    if name == "haar":
        return HaarFaceDetector(min_face_size=min_face_size, **kwargs)
    raise ValueError(f"serve.detector={name!r}: expected one of {', '.join(DETECTORS)}")


def detector_from_config(serve_cfg: Any) -> FaceDetector:
    """The Hydra `serve` group's detector: `detector`, `min_face_size` and the `detector_*` settings."""
    return make_detector(
        str(serve_cfg.get("detector", "haar")),
        min_face_size=int(serve_cfg.get("min_face_size", DEFAULT_MIN_FACE_SIZE)),
        downscale=float(serve_cfg.get("detector_downscale", DEFAULT_DOWNSCALE)),
        scale_factor=float(serve_cfg.get("detector_scale_factor", DEFAULT_SCALE_FACTOR)),
        min_neighbors=int(serve_cfg.get("detector_min_neighbors", DEFAULT_MIN_NEIGHBORS)),
    )


class ImageError(ValueError):
    """An upload that is not a usable image; `status` is the HTTP status a service should answer with."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def open_image(data: bytes, max_bytes: int | None = None, max_pixels: int | None = None) -> Any:
    """Encoded image bytes -> a PIL image with only its header read, within the byte and pixel limits.

    What `decode_image` checks before it decodes a pixel, and what the page's upload route checks before it
    stores a file: a decompression bomb or a file that is not a picture costs nothing."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise ImageError("empty upload: no image bytes were received", 400)
    if max_bytes and len(data) > max_bytes:
        raise ImageError(f"image is {len(data):,} bytes; the limit is {max_bytes:,}", 413)
    try:
        image = Image.open(io.BytesIO(data))  # reads the header only
    except Image.DecompressionBombError as err:
        raise ImageError(f"image has too many pixels: {err}", 413) from err
    except (UnidentifiedImageError, OSError, ValueError) as err:
        raise ImageError("not an image: Pillow cannot identify the uploaded bytes as a picture", 415) from err
    width, height = image.size
    if max_pixels and width * height > max_pixels:
        raise ImageError(
            f"image is {width}x{height} = {width * height:,} pixels; the limit is {max_pixels:,}", 413
        )
    return image


def decode_image(data: bytes, max_bytes: int | None = None, max_pixels: int | None = None) -> np.ndarray:
    """Encoded image bytes (JPEG, PNG, WebP, ...) -> RGB uint8 HxWx3, in memory, honouring EXIF rotation.

    The byte and pixel limits are checked before any pixel is decoded (`open_image`), so a decompression
    bomb costs nothing.
    """
    from PIL import ImageOps

    image = open_image(data, max_bytes, max_pixels)
    width, height = image.size
    try:
        image.load()
        image = ImageOps.exif_transpose(image)
        rgb = np.asarray(_to_8bit(image).convert("RGB"), dtype=np.uint8)
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt pixel data
        raise ImageError(f"corrupt image: the {image.format} data could not be decoded ({err})", 400) from err
    if rgb.ndim != 3 or rgb.shape[0] == 0 or rgb.shape[1] == 0:
        raise ImageError(f"image has no pixels ({width}x{height})", 400)
    return rgb


def _to_8bit(image: Any) -> Any:
    """16-bit and 32-bit grey images (PNG, TIFF) scaled to 8 bits: Pillow's convert("RGB") clips them at 255
    instead, which turns a 16-bit photo white."""
    from PIL import Image

    if image.mode not in ("I", "F") and not image.mode.startswith("I;16"):
        return image
    grey = np.asarray(image, dtype=np.float64)
    if image.mode.startswith("I;16") or grey.max(initial=0) > 255:  # "I" from a 16-bit PNG: 0..65535
        grey = grey / 257.0
    return Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8))


def as_rgb(image: object) -> np.ndarray:
    """Whatever a user scripts with -> an RGB or grayscale uint8 array: a NumPy array (RGB channel order),
    a PIL image, encoded image bytes or a path to an image file."""
    if isinstance(image, np.ndarray):
        return image
    if isinstance(image, (bytes, bytearray, memoryview)):
        return decode_image(bytes(image))
    if isinstance(image, (str, Path)):
        return decode_image(Path(image).read_bytes())
    if hasattr(image, "convert") and hasattr(image, "size"):  # a PIL image
        return np.asarray(image.convert("RGB"), dtype=np.uint8)
    raise TypeError(f"expected an RGB array, PIL image, image bytes or a path, got {type(image).__name__}")
