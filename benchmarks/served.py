"""`bentoml serve` of this repository in a child process, for the tests and the benchmarks.

One place knows how to start it (its own process group and BentoML home, no EMOTUNE_* settings leaking in
from the caller's environment), wait until /readyz answers, and stop it with all its workers.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from emotune.config import REPO_ROOT


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve_env(bentoml_home: Path | str, **extra: str) -> dict[str, str]:
    """The caller's environment minus EMOTUNE_* settings, plus a BentoML home, no telemetry, `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOTUNE_")}
    env.update(
        BENTOML_HOME=str(bentoml_home),
        BENTOML_DO_NOT_TRACK="true",
        GRADIO_ANALYTICS_ENABLED="False",
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    env.update(extra)
    return env


@dataclass
class Served:
    url: str
    process: subprocess.Popen
    started_s: float  # seconds until /readyz answered 200
    log: Path


@contextlib.contextmanager
def bentoml_serve(
    target: str,
    env: dict[str, str],
    log: Path,
    timeout: float = 300,
    host: str | None = None,
    command: Sequence[str] | None = None,
    scheme: str = "http",
) -> Iterator[Served]:
    """`bentoml serve target` on a free port; yields once /readyz answers 200, stops it after.

    Without `host` the service's own configuration chooses where it listens (what the tests check). A server
    that exits or is not ready in `timeout` seconds raises with the end of its log (the default allows for
    a machine busy with other work: a server alone is ready in seconds). `command` runs instead of
    `python -m bentoml serve target` (e.g. another environment's `emotune serve`) with the same --host and
    --port; `scheme` "https" for a server with TLS (its certificate is not verified: a self-signed one).
    """
    port = free_port()
    where = ["--host", host] if host else []
    start = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [*(command or [sys.executable, "-m", "bentoml", "serve", target]), *where, "--port", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped whole, workers included
        )
    url = f"{scheme}://{host if host not in (None, '0.0.0.0', '::') else '127.0.0.1'}:{port}"
    try:
        wait_until_ready(proc, f"{url}/readyz", log, timeout, "bentoml serve", verify=scheme != "https")
        yield Served(url, proc, time.monotonic() - start, log)
    finally:
        stop_group(proc)


def wait_until_ready(
    proc: subprocess.Popen, url: str, log: Path, timeout: float, what: str, verify: bool = True
) -> None:
    """Poll `url` until it answers 200; raise with the end of `log` if `proc` exits or `timeout` passes.
    `verify=False` accepts any TLS certificate (a self-signed one)."""
    start = time.monotonic()
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2, verify=verify).status_code == 200:
                return
        if time.monotonic() - start > timeout:
            raise TimeoutError(f"{what} not ready after {timeout}s:\n{log.read_text()[-3000:]}")
        time.sleep(0.25)


def stop_group(proc: subprocess.Popen) -> None:
    """Stop a process started with start_new_session=True, with its whole group (workers included)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
