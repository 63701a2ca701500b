"""Face detection (OpenCV Haar cascade) and image decoding with limits."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers.serving import GRACE_FACE_BOX, encode, fer_like_face, paste, photo_rgb

from emotune.vision import HaarFaceDetector, ImageError, decode_image, make_detector


def _iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / float(aw * ah + bw * bh - w * h)


@pytest.fixture(scope="module")
def detector() -> HaarFaceDetector:
    return HaarFaceDetector(min_face_size=40)


def test_finds_the_face_in_a_photo_in_full_frame_coordinates(detector):
    boxes = detector.detect(photo_rgb())
    assert len(boxes) == 1
    # Detection runs on a shrunk frame; the box still lands on the face in full-resolution pixels.
    assert _iou(boxes[0], GRACE_FACE_BOX) > 0.8


@pytest.mark.parametrize("scale", [2, 3, 5])
def test_finds_a_fer_like_face_pasted_into_a_larger_frame(detector, scale):
    frame, box = paste(fer_like_face(), scale=scale)
    boxes = detector.detect(frame)
    assert len(boxes) == 1
    assert _iou(boxes[0], box) > 0.6


def test_several_faces_largest_first(detector):
    face = fer_like_face()
    frame = np.full((480, 900, 3), 128, np.uint8)
    frame[50:194, 40:184] = np.kron(face, np.ones((3, 3), np.uint8))[..., None]  # 144 px
    frame[200:440, 500:740] = np.kron(face, np.ones((5, 5), np.uint8))[..., None]  # 240 px
    boxes = detector.detect(frame)
    assert len(boxes) == 2
    assert boxes[0][2] > boxes[1][2]
    assert _iou(boxes[0], (500, 200, 240, 240)) > 0.6 and _iou(boxes[1], (40, 50, 144, 144)) > 0.6


def test_no_face_in_blank_or_noise_frames(detector):
    rng = np.random.default_rng(0)
    assert detector.detect(np.full((480, 640, 3), 200, np.uint8)) == []
    assert detector.detect(rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)) == []
    assert detector.detect(np.zeros((10, 10), np.uint8)) == []  # smaller than any face


@pytest.mark.parametrize("shape", [(1, 1), (1, 640), (480, 1), (3, 3, 3)])
def test_frames_too_small_to_shrink_have_no_face(shape):
    # The default detector shrinks the frame; one pixel would become none (an OpenCV error, a 500 once).
    assert HaarFaceDetector().detect(np.zeros(shape, np.uint8)) == []


def test_a_face_of_the_minimum_size_is_found_wherever_it_sits():
    # A 0.5x frame scanned with a 2-pixel stride found this 50 px face at 27 of these 32 offsets (the
    # benchmark's 50-90 px faces: 56%); the default detector must find it at all of them.
    face = cv2.resize(fer_like_face(), (50, 50), interpolation=cv2.INTER_AREA)
    detector = HaarFaceDetector()
    missed = []
    for dx in range(8):
        for dy in range(0, 8, 2):
            frame = np.full((480, 640, 3), 128, np.uint8)
            frame[200 + dy : 250 + dy, 300 + dx : 350 + dx] = face[..., None]
            boxes = detector.detect(frame)
            if not any(_iou(b, (300 + dx, 200 + dy, 50, 50)) >= 0.3 for b in boxes):  # as the benchmark
                missed.append((dx, dy))
    assert missed == []


def test_min_face_size_is_respected():
    frame, _ = paste(fer_like_face(), scale=2)  # a 96 px face
    assert HaarFaceDetector(min_face_size=40).detect(frame)
    assert HaarFaceDetector(min_face_size=150).detect(frame) == []


def test_grayscale_input_gives_the_same_boxes(detector):
    rgb = photo_rgb()
    gray = (rgb @ np.array([0.299, 0.587, 0.114])).round().astype(np.uint8)
    assert _iou(detector.detect(gray)[0], detector.detect(rgb)[0]) > 0.9


def test_unknown_detector_is_refused():
    with pytest.raises(ValueError, match="haar"):
        make_detector("yunet")


def test_decode_image_reads_png_and_jpeg_in_rgb():
    rgb = photo_rgb()[:100, :120]
    assert np.array_equal(decode_image(encode(rgb)), rgb)
    jpeg = decode_image(encode(rgb, "JPEG", quality=95))
    assert jpeg.shape == rgb.shape and np.abs(jpeg.astype(int) - rgb).mean() < 5


def _truncated_jpeg() -> bytes:
    data = encode(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8), "JPEG")
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (b"", 400, "empty"),
        (b"definitely not an image", 415, "not an image"),
        (_truncated_jpeg(), 400, "corrupt"),
    ],
)
def test_decode_image_rejects_bad_bytes(data, status, message):
    with pytest.raises(ImageError, match=message) as err:
        decode_image(data)
    assert err.value.status == status


def test_decode_image_limits_bytes_and_pixels():
    big = encode(np.zeros((300, 400, 3), np.uint8))
    with pytest.raises(ImageError, match="bytes") as err:
        decode_image(big, max_bytes=len(big) - 1)
    assert err.value.status == 413
    with pytest.raises(ImageError, match="pixels") as err:
        decode_image(big, max_pixels=300 * 400 - 1)
    assert err.value.status == 413
    assert decode_image(big, max_bytes=len(big), max_pixels=300 * 400).shape == (300, 400, 3)
