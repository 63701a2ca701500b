"""DVC stage `evaluate`: artifacts/train + data/prepared -> artifacts/evaluate (metrics, report, plots),
logged to the training run in MLflow. Everything is in emotune.evaluation.evaluate_stage."""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: no C++ info lines

from emotune.config import load_params
from emotune.evaluation import evaluate_stage


def main() -> int:
    evaluate_stage(load_params())
    return 0


if __name__ == "__main__":
    sys.exit(main())
