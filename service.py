"""`bentoml serve` / `bentoml build` entry point (bentofile.yaml: service: "service:Emotune").

The service itself is emotune.service. This shim puts the src/ folder beside it first on the import path, so
the same import works from a clone of the repository and inside a built bento (which carries src/ but does
not install the package).
"""

import sys
from pathlib import Path

_SRC = Path(__file__).resolve().parent / "src"
if _SRC.is_dir() and str(_SRC) not in sys.path:
    sys.path.insert(0, str(_SRC))

from emotune.service import Emotune  # noqa: E402

__all__ = ["Emotune"]
