"""A real `mlflow server` on this machine's loopback, as a team would run one: runs and the registry in its
sqlite store, artifacts in its own folder, served (proxied) by the server, so clients need no access to it."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from benchmarks.served import free_port, stop_group, wait_until_ready
from helpers.pipeline import VENV_BIN


@dataclass(frozen=True)
class TrackingServer:
    url: str
    artifacts: Path  # --artifacts-destination: where the server keeps what clients log
    store: Path  # its sqlite file


@contextlib.contextmanager
def mlflow_server(root: Path, timeout: float = 300) -> Iterator[TrackingServer]:
    """`mlflow server` keeping everything under `root`; yields once /health answers, stops it after."""
    root.mkdir(parents=True, exist_ok=True)
    port = free_port()
    server = TrackingServer(f"http://127.0.0.1:{port}", root / "artifacts", root / "mlflow.db")
    log = root / "server.log"
    command = [
        str(VENV_BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{server.store}",
        "--artifacts-destination", str(server.artifacts), "--serve-artifacts",
    ]  # fmt: skip
    # Without its job runner (seven processes for MLflow's GenAI jobs, which nothing here uses).
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "w") as out:
        proc = subprocess.Popen(
            command, cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        wait_until_ready(proc, f"{server.url}/health", log, timeout, "mlflow server")
        yield server
    finally:
        stop_group(proc)
