"""Loaded by every Python process started with this folder on PYTHONPATH (`service_load.serving(...,
detection_free=True)`): each Haar face detector answers every frame with the boxes it found on its first
one, so /analyze does everything but the detection. The benchmark's load sends one frame over and over, so
the answers are the same; what the service can do without detection is the floor a faster detector could
reach (docs/benchmarks.md)."""

import os

if os.environ.get("EMOTUNE_BENCH_DETECTION_FREE") == "1":
    import numpy as np

    from emotune import vision

    _detect = vision.HaarFaceDetector.detect

    def _first_boxes(self: vision.HaarFaceDetector, image: np.ndarray) -> list[vision.Box]:
        boxes = self.__dict__.get("_bench_first_boxes")
        if boxes is None:
            boxes = self.__dict__["_bench_first_boxes"] = _detect(self, image)
        return list(boxes)

    vision.HaarFaceDetector.detect = _first_boxes
