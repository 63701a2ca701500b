"""DVC stage `prepare`: params.yaml (data.*, paths.prepared) + raw FER2013 -> per-split arrays, report, plot.

Everything is in emotune.data.prepare; this only reads the configuration DVC tracks.
"""

from __future__ import annotations

import logging
import sys

from emotune.config import load_params
from emotune.data import DataValidationError, prepare


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    cfg = load_params()
    try:
        prepare(
            cfg.data.raw_path,
            cfg.paths.prepared,
            synthetic=bool(cfg.data.synthetic),
            image_size=int(cfg.data.image_size),
        )
    except (DataValidationError, FileNotFoundError, ValueError) as exc:
        # A clear message, not a traceback: the data (or its config), not the code, needs fixing.
        print(f"prepare failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
