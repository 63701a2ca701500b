"""DVC stage `prepare`: params.yaml (data.*, paths.prepared) + raw FER2013 -> per-split arrays, report, plot.

Everything is in emotune.data.prepare.prepare_stage; this only reads the configuration DVC tracks.
"""

from __future__ import annotations

import logging
import sys

from emotune.config import load_params
from emotune.data import DataValidationError
from emotune.data.prepare import prepare_stage


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        prepare_stage(load_params())
    except (DataValidationError, FileNotFoundError, ValueError) as exc:
        # A clear message, not a traceback: the data (or its config), not the code, needs fixing.
        print(f"prepare failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
