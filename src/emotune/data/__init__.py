"""FER2013 data: load and validate both public formats, synthesize test data, prepare per-split arrays.

from emotune.data import load_prepared
splits = load_prepared("artifacts/prepared")      # {"train": (x, y), "validation": (x, y)[, "test": ...]}
"""

from emotune.data.fer2013 import (
    SPLITS,
    USAGE_TO_SPLIT,
    DataValidationError,
    Fer2013,
    load,
    load_csv,
    load_image_folder,
)
from emotune.data.prepare import load_prepared, prepare, save_npz
from emotune.data.synthetic import synthesize

__all__ = [
    "SPLITS",
    "USAGE_TO_SPLIT",
    "DataValidationError",
    "Fer2013",
    "load",
    "load_csv",
    "load_image_folder",
    "load_prepared",
    "prepare",
    "save_npz",
    "synthesize",
]
