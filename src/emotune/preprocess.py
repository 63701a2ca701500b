"""The one preprocessing path shared by training, evaluation, serving and the page.

Faces travel as uint8 grayscale crops of FACE_SIZE x FACE_SIZE (the FER2013 format). `to_model_input` turns a
stack of them into the model's input; scaling, resizing to the backbone's size and the gray->3 channel copy
happen inside the model itself, so no caller can get them wrong.
"""

from __future__ import annotations

import cv2
import numpy as np

FACE_SIZE = 48

Box = tuple[int, int, int, int]  # x, y, width, height in pixels of the full image


def to_gray(image: np.ndarray) -> np.ndarray:
    """uint8 grayscale HxW from an RGB(A) HxWx3/4 image or an HxW(x1) grayscale one (RGB channel order)."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        if np.issubdtype(image.dtype, np.floating) and image.size and float(image.max()) <= 1.0:
            image = image * 255.0
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[:, :, 0]
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    raise ValueError(f"expected an HxW, HxWx1, HxWx3 or HxWx4 image, got shape {image.shape}")


def expand_box(box: Box, margin: float, width: int, height: int) -> Box:
    """Grow a face box by `margin` of its size on every side, as a square, clipped to the image."""
    x, y, w, h = box
    side = max(w, h) * (1.0 + 2.0 * margin)
    cx, cy = x + w / 2.0, y + h / 2.0
    x0, y0 = max(0, round(cx - side / 2)), max(0, round(cy - side / 2))
    x1, y1 = min(width, round(cx + side / 2)), min(height, round(cy + side / 2))
    return x0, y0, max(1, x1 - x0), max(1, y1 - y0)


def crop_face(gray: np.ndarray, box: Box | None = None, size: int = FACE_SIZE) -> np.ndarray:
    """Crop `box` (default: the whole image) from a uint8 grayscale image and resize it to size x size."""
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError(f"crop_face wants a uint8 HxW grayscale image, got {gray.dtype} {gray.shape}")
    x, y, w, h = box if box is not None else (0, 0, gray.shape[1], gray.shape[0])
    face = gray[y : y + h, x : x + w]
    if face.size == 0:
        raise ValueError(f"empty crop {box} from an image of shape {gray.shape}")
    if face.shape != (size, size):
        shrinking = face.shape[0] > size or face.shape[1] > size
        face = cv2.resize(face, (size, size), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    return face


def to_model_input(faces: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S) face crops -> float32 (N, S, S, 1) grey levels 0..255, the models' input."""
    faces = np.asarray(faces)
    if faces.ndim != 3 or faces.dtype != np.uint8:
        raise ValueError(f"expected uint8 face crops of shape (N, S, S), got {faces.dtype} {faces.shape}")
    return faces.astype(np.float32)[..., None]
