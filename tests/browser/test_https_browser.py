"""The page over HTTPS, as a phone or another computer on the LAN would open it: `emotune serve --https` on a
loopback address that is not localhost (127.0.0.2), its self-signed certificate made on the way, and a real
headless Chromium (which does not trust that certificate: it is told to go on, as a user accepts it once)
whose fake camera streams a face; the page finds it and shows an emotion. Needs /usr/bin/chromium."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers.browser import chromium, require_chromium, write_y4m
from helpers.serving import fer_like_face, paste

from benchmarks.served import bentoml_serve, serve_env
from emotune.labels import EMOTIONS
from emotune.tls import certificate_names

pytestmark = [pytest.mark.slow, pytest.mark.browser]

HOST = "127.0.0.2"
EMOTUNE = Path(sys.executable).parent / "emotune"
READY_TIMEOUT_S = 240  # a loaded 2-core machine took over 90 s to start the server


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """(https URL, the folder of the certificate) of `emotune serve --https --host 127.0.0.2`."""
    require_chromium()
    tmp = tmp_path_factory.mktemp("https")
    env = serve_env(tmp / "bentoml", XDG_CONFIG_HOME=str(tmp / "config"))  # the certificate goes there
    command = [str(EMOTUNE), "serve", "--https"]
    with bentoml_serve("", env, tmp / "server.log", READY_TIMEOUT_S, HOST, command, scheme="https") as server:
        yield server.url, tmp / "config" / "emotune" / "tls"


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    frame, _ = paste(fer_like_face(), size=(480, 640), at=(240, 110), scale=3)
    return write_y4m(tmp_path_factory.mktemp("camera") / "camera.y4m", [frame] * 20)


def test_the_page_over_https_streams_the_camera_and_finds_the_face(served, video):
    url, tls_dir = served
    assert url.startswith(f"https://{HOST}:")
    assert HOST in certificate_names(tls_dir / "cert.pem")  # made for the address it serves on
    with chromium(video) as browser:
        context = browser.new_context(permissions=["camera"], ignore_https_errors=True)
        page = context.new_page()
        page.goto(f"{url}/ui/", wait_until="domcontentloaded")
        page.wait_for_selector("#mood .et-mood", timeout=60_000)
        assert page.evaluate("location.protocol") == "https:" and page.evaluate("window.isSecureContext")
        page.click("#camera button:has-text('Click to Access Webcam')")
        page.click("#camera button.capture-button", timeout=15_000)  # Record: frames go to the server
        page.wait_for_selector("#mood .et-mood:not([data-mood=''])", timeout=60_000)
        assert page.get_attribute("#mood .et-mood", "data-mood") in EMOTIONS
        one_face = "/\\b1 face\\b/.test(document.querySelector('#mood').innerText)"
        page.wait_for_function(one_face, timeout=15_000)  # the face the camera shows, found
        context.close()
