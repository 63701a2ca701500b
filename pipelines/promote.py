"""DVC stage `promote`: the best MLflow run -> Model Registry alias, models/ (ONNX + card), BentoML store.

Everything is in emotune.promotion.promote_stage; this only reads the configuration DVC tracks.
"""

from __future__ import annotations

import sys

from emotune.config import load_params
from emotune.promotion import promote_stage


def main() -> int:
    promote_stage(load_params())
    return 0


if __name__ == "__main__":
    sys.exit(main())
