"""Loaded by every Python process started with this folder on PYTHONPATH (the smoke pipeline puts it there for
the DVC stages it runs): at exit, writes the files of the `emotune` modules the process loaded, with its
command line, to a JSON file in $EMOTUNE_MODULE_AUDIT. tests/integration/test_dvc_deps.py checks them against
dvc.yaml."""

import atexit
import json
import os
import sys

_DIR = os.environ.get("EMOTUNE_MODULE_AUDIT")


def _dump() -> None:
    files = sorted(
        {
            module.__file__
            for name, module in list(sys.modules.items())
            if (name == "emotune" or name.startswith("emotune.")) and getattr(module, "__file__", None)
        }
    )
    with open(os.path.join(_DIR, f"{os.getpid()}.json"), "w") as f:
        json.dump({"argv": sys.argv, "files": files}, f)


if _DIR:
    atexit.register(_dump)
