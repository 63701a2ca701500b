"""uv for the tests: the full environment's own copy (a locked dependency of the `train` group), so no test
depends on a uv on PATH or on pip, which a uv-made environment lacks."""

from __future__ import annotations

import sys

UV = [sys.executable, "-m", "uv"]
