"""DVC stage `train`: params.yaml + data/prepared -> artifacts/train (best model, history, curves, run id).

Everything is in emotune.training.train_stage; this only reads the configuration DVC tracks.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: no C++ info lines

from emotune.config import load_params
from emotune.resume import ResumeRefused
from emotune.training import train_stage


def main() -> int:
    sys.stdout.reconfigure(line_buffering=True)  # progress reaches a log (dvc repro > file) line by line
    try:
        train_stage(load_params(), code_files=[__file__])
    except ResumeRefused as err:
        print(f"train: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
