"""uv for the tests, found as the Makefile finds it: on PATH, as `python3 -m uv`, or the copy the Makefile
bootstraps into .uv-bootstrap/."""

from __future__ import annotations

import shutil
import subprocess

from emotune.config import REPO_ROOT


def uv_command() -> list[str] | None:
    if shutil.which("uv"):
        return ["uv"]
    if subprocess.run(["python3", "-m", "uv", "--version"], capture_output=True).returncode == 0:
        return ["python3", "-m", "uv"]
    bootstrapped = REPO_ROOT / ".uv-bootstrap" / "bin" / "uv"
    return [str(bootstrapped)] if bootstrapped.is_file() else None


NO_UV = "uv not found (on PATH, as python3 -m uv or in .uv-bootstrap/): `make env-serve` bootstraps it"
