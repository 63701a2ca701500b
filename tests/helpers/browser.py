"""What the browser tests share: headless Chromium with a fake camera that plays a y4m file, that file, and
a real `bentoml serve` of the page for the camera to stream to."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from benchmarks.served import bentoml_serve, serve_env

CHROMIUM = Path("/usr/bin/chromium")
FPS = 10
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"  # screenshots and server logs, git-ignored


def require_chromium() -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found: apt-get install -y chromium")


@contextmanager
def serve_page(tmp: Path, camera: list[np.ndarray], log_name: str, **env: str) -> Iterator[dict]:
    """`bentoml serve service:Emotune` with `env` added, and a fake-camera video of the `camera` frames:
    yields {"url", "video", "tmp"}. The server's log is kept as test-artifacts/`log_name`, to see what
    happened when a test failed."""
    require_chromium()
    video = write_y4m(tmp / "camera.y4m", camera)
    env = serve_env(tmp / "bentoml", **env)
    try:
        with bentoml_serve("service:Emotune", env, tmp / "server.log") as served:
            yield {"url": served.url, "video": video, "tmp": tmp}
    finally:
        ARTIFACTS.mkdir(exist_ok=True)
        if (tmp / "server.log").is_file():
            shutil.copy(tmp / "server.log", ARTIFACTS / log_name)


def write_y4m(path: Path, frames: list[np.ndarray]) -> Path:
    """A YUV4MPEG2 video (what Chromium's fake camera plays, looping) from RGB frames."""
    height, width = frames[0].shape[:2]
    with open(path, "wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{FPS}:1 Ip A1:1 C420jpeg\n".encode())
        for rgb in frames:
            out.write(b"FRAME\n" + cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())
    return path


@contextmanager
def chromium(video: Path) -> Iterator:
    """Headless Chromium whose camera plays `video` (looping) and may play audio without a click."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=str(CHROMIUM),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={video}",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        try:
            yield browser
        finally:
            browser.close()


def open_page(browser: Any, server: str) -> Any:
    """A fresh browser session (camera allowed) on the server's page, recording what the page fetches from
    anywhere but the server (`page.outside`), uncaught errors (`page.errors`) and console errors
    (`page.console_errors`, e.g. a resource that failed to load). Close it with `page.context.close()`."""
    context = browser.new_context(permissions=["camera"], viewport={"width": 1366, "height": 900})
    page = context.new_page()
    page.outside, page.errors, page.console_errors = [], [], []
    page.on(
        "request",
        lambda r: page.outside.append(r.url) if not r.url.startswith((server, "data:", "blob:")) else None,
    )
    page.on("pageerror", lambda err: page.errors.append(str(err)))
    page.on("console", lambda m: _console_error(page, m))
    page.goto(f"{server}/ui/", wait_until="domcontentloaded")  # Gradio never goes network-idle
    page.wait_for_selector("#mood .et-mood", timeout=30_000)
    return page


def _console_error(page: Any, message: Any) -> None:
    where = message.location.get("url", "")
    # The browser asks every site for /favicon.ico; BentoML's root has none (a 404 that is nobody's error).
    if message.type == "error" and not where.endswith("/favicon.ico"):
        page.console_errors.append(f"{message.text} ({where})")


def start_camera(page: Any) -> None:
    """Open the Live tab's camera and press Record: frames stream to the server."""
    page.click("#camera button:has-text('Click to Access Webcam')")
    page.click("#camera button.capture-button", timeout=15_000)
