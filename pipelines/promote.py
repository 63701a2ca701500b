"""DVC stage `promote`: the best MLflow run -> Model Registry alias, models/ (ONNX + card), BentoML store.

Everything is in emotune.registry.promote; this only reads the configuration DVC tracks.
"""

from __future__ import annotations

import sys

from emotune.config import load_params
from emotune.registry import promote


def main() -> int:
    promote(load_params())
    return 0


if __name__ == "__main__":
    sys.exit(main())
