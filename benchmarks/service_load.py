"""The service under load: a real `bentoml serve` on 127.0.0.1, a small asyncio client (httpx), its memory.

Every request goes to 127.0.0.1 only; each run is bounded both in requests and in seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.served import Served, bentoml_serve, serve_env

READY_TIMEOUT_S = 180


@dataclass
class Server:
    served: Served
    detection_free: bool = False

    @property
    def url(self) -> str:
        return self.served.url

    @property
    def started_s(self) -> float:
        return self.served.started_s

    def tree(self) -> list[int]:
        """The server's process and all its descendants (BentoML runs the service in worker processes)."""
        import psutil

        try:
            root = psutil.Process(self.served.process.pid)
            return [root.pid, *(p.pid for p in root.children(recursive=True))]
        except psutil.NoSuchProcess:
            return []

    def memory(self) -> dict[str, Any]:
        """Peak resident memory (VmHWM) of each process of the tree, in MiB: the largest and their sum."""
        peaks = {}
        for pid in self.tree():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmHWM:"):
                        peaks[pid] = int(line.split()[1]) / 1024
        return {
            "processes": len(peaks),
            "peak_rss_largest_mib": max(peaks.values(), default=None),
            "peak_rss_sum_mib": sum(peaks.values()) if peaks else None,
        }


DETECTION_FREE = Path(__file__).resolve().parent / "detection_free"


@contextlib.contextmanager
def serving(
    model_dir: Path, adaptive_batching: bool, log_dir: Path, detection_free: bool = False
) -> Iterator[Server]:
    """`bentoml serve` of this repository's service with the model in `model_dir` (EMOTUNE_MODEL_DIR) and
    adaptive batching of /classify on or off (serve.adaptive_batching), in a BentoML home of its own.

    `detection_free`: the face detector answers every frame with its first frame's boxes
    (benchmarks/detection_free), which measures the service without the cost of detection."""
    log_dir.mkdir(parents=True, exist_ok=True)
    name = f"batching-{'on' if adaptive_batching else 'off'}{'-detection-free' if detection_free else ''}"
    log = log_dir / f"bentoml-serve-{name}.log"
    extra = {}
    if detection_free:
        path = os.pathsep.join(p for p in (str(DETECTION_FREE), os.environ.get("PYTHONPATH")) if p)
        extra = {"PYTHONPATH": path, "EMOTUNE_BENCH_DETECTION_FREE": "1"}
    # The caller's overrides (e.g. detector settings) apply to the served model too.
    overrides = f"{os.environ.get('EMOTUNE_OVERRIDES', '')} serve.adaptive_batching={adaptive_batching}"
    with tempfile.TemporaryDirectory(prefix="emotune-bench-bentoml-") as home:
        env = serve_env(
            home,
            EMOTUNE_MODEL_DIR=str(Path(model_dir).resolve()),
            EMOTUNE_OVERRIDES=overrides.strip(),
            **extra,
        )
        with bentoml_serve("service:Emotune", env, log, READY_TIMEOUT_S, host="127.0.0.1") as served:
            yield Server(served, detection_free)


@dataclass(frozen=True)
class Workload:
    path: str
    clients: int
    faces_per_request: int
    body: dict[str, Any] = field(repr=False)  # httpx request arguments: content/files and headers
    # Requests per second each client sends at most, like a camera at that frame rate that waits for each
    # answer (a late answer delays the next frame; no burst to catch up); None: back to back.
    rate_per_client: float | None = None


def analyze_workload(
    jpeg: bytes, faces: int, clients: int = 10, rate_per_client: float | None = None
) -> Workload:
    files = {"files": {"image": ("frame.jpg", jpeg, "image/jpeg")}}
    return Workload("/analyze", clients, faces, files, rate_per_client)


def classify_workload(crops: np.ndarray, clients: int) -> Workload:
    import json

    body = json.dumps({"crops": crops.astype(int).tolist()}, separators=(",", ":")).encode()
    return Workload(
        "/classify",
        clients,
        len(crops),
        {"content": body, "headers": {"content-type": "application/json"}},
    )


@dataclass
class RunResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]
    error_samples: list[str]


async def _run(url: str, work: Workload, requests: int, seconds: float) -> RunResult:
    latencies: list[float] = []
    errors: list[str] = []
    issued = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=work.clients, max_keepalive_connections=work.clients)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        interval = 1 / work.rate_per_client if work.rate_per_client else 0.0

        async def one_client(index: int) -> None:
            nonlocal issued
            send_at = time.perf_counter() + interval * index / work.clients  # clients spread over a period
            while issued < requests and time.monotonic() < deadline:
                if interval:
                    await asyncio.sleep(max(0.0, send_at - time.perf_counter()))
                    send_at = max(send_at, time.perf_counter()) + interval
                issued += 1
                start = time.perf_counter()
                try:
                    response = await client.post(work.path, **work.body)
                    ok = response.status_code == 200
                    why = f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as err:
                    ok, why = False, f"{type(err).__name__}: {err}"
                latencies.append(1000 * (time.perf_counter() - start))
                if not ok:
                    errors.append(why)

        start = time.perf_counter()
        await asyncio.gather(*(one_client(i) for i in range(work.clients)))
        elapsed = time.perf_counter() - start
    return RunResult(len(latencies), len(errors), elapsed, latencies, errors[:3])


def load(url: str, work: Workload, runs: int, requests: int, seconds: float) -> dict[str, Any]:
    """A warm-up run, then `runs` timed runs of at most `requests` requests or `seconds` seconds each:
    requests/s and faces/s (medians over the runs), latency percentiles over every timed request, errors."""
    warm = asyncio.run(_run(url, work, max(2 * work.clients, 4), seconds))
    results = [asyncio.run(_run(url, work, requests, seconds)) for _ in range(runs)]
    latencies = np.concatenate([r.latencies_ms for r in results]) if results else np.zeros(0)
    per_s = [r.requests / r.seconds for r in results if r.seconds > 0]
    errors = warm.errors + sum(r.errors for r in results)
    return {
        "endpoint": work.path,
        "clients": work.clients,
        "rate_per_client": work.rate_per_client,
        "faces_per_request": work.faces_per_request,
        "requests": int(sum(r.requests for r in results)),
        "errors": int(errors),
        "error_samples": (warm.error_samples + [s for r in results for s in r.error_samples])[:3],
        "requests_per_s": float(np.median(per_s)) if per_s else None,
        "faces_per_s": float(np.median(per_s)) * work.faces_per_request if per_s else None,
        "runs_requests_per_s": [round(v, 2) for v in per_s],
        **{f"p{q}_ms": float(np.percentile(latencies, q)) if len(latencies) else None for q in (50, 95, 99)},
    }
