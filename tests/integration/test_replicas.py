"""Several serving replicas behind one proxy, for real: two `bentoml serve` of this checkout on loopback
ports and a real nginx running the shipped deploy/nginx.conf, its compose service names replaced by those
ports (the containers themselves are not built here: deploy/README.md). The page sticks to one replica per
client; the API goes round-robin."""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from helpers.serving import encode, photo_rgb

from benchmarks.served import bentoml_serve, free_port, serve_env, stop_group, wait_until_ready
from emotune.config import REPO_ROOT

pytestmark = pytest.mark.slow

CONFIG = REPO_ROOT / "deploy" / "nginx.conf"
REPLICAS = ("emotune-a:3000", "emotune-b:3000")  # the compose services the shipped file names
LOG_WAIT_S = 10
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).is_file()), None)


@dataclass(frozen=True)
class Proxied:
    url: str
    replicas: tuple[str, ...]  # host:port of each replica
    access_log: Path

    def upstreams(self, path: str, count: int) -> list[str]:
        """The replica that answered each logged request for `path`, in order, once `count` are logged: nginx
        writes a request's line after the client has its answer, so the last one can lag behind."""
        pattern = re.compile(rf'"[A-Z]+ {re.escape(path)}(?:\?\S*)? HTTP/[\d.]+" \d+ upstream=(\S+)')
        deadline = time.monotonic() + LOG_WAIT_S
        while True:
            found = [m.group(1) for m in pattern.finditer(self.access_log.read_text())]
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.05)


def local_config(replicas: list[str], port: int, scratch: Path) -> str:
    """The shipped configuration with this machine's addresses, and nginx's scratch files in `scratch`."""
    text = CONFIG.read_text()
    for name, address in zip(REPLICAS, replicas, strict=True):
        assert text.count(f"server {name};") == 2, name  # in both upstreams
        text = text.replace(f"server {name};", f"server {address};")
    assert "listen 8080;" in text
    text = text.replace("listen 8080;", f"listen 127.0.0.1:{port};")
    # Outside a container nginx's compiled-in temp folders may not be writable: keep them with the test.
    temp = "".join(f"    {kind}_temp_path {scratch / kind};\n" for kind in ("client_body", "proxy"))
    return text.replace("http {\n", "http {\n" + temp, 1)


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxied]:
    if NGINX is None:
        pytest.skip("nginx is not installed (apt-get install nginx; .ci/run installs it)")
    tmp = tmp_path_factory.mktemp("replicas")
    env = serve_env(tmp / "bentoml")
    with contextlib.ExitStack() as stack:
        served = [
            stack.enter_context(bentoml_serve("service:Emotune", env, tmp / f"replica-{i}.log", timeout=300))
            for i in range(len(REPLICAS))
        ]
        addresses = [s.url.removeprefix("http://") for s in served]
        port = free_port()
        conf = tmp / "nginx.conf"
        conf.write_text(local_config(addresses, port, tmp))
        base = [NGINX, "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "error.log")]
        # Its workers run as this user (as root nginx would switch them to `nobody`, who cannot write here).
        main = f"pid {tmp / 'nginx.pid'}; user {pwd.getpwuid(os.getuid()).pw_name};"
        check = subprocess.run([*base, "-t", "-g", main], capture_output=True, text=True, timeout=60)
        assert check.returncode == 0, check.stderr  # the real nginx accepts the shipped file
        access_log, log = tmp / "access.log", tmp / "nginx.log"
        with open(access_log, "w") as out, open(log, "w") as err:
            proc = subprocess.Popen(
                [*base, "-g", f"daemon off; {main}"], stdout=out, stderr=err, start_new_session=True
            )
        stack.callback(stop_group, proc)
        url = f"http://127.0.0.1:{port}"
        wait_until_ready(proc, f"{url}/readyz", log, 60, "nginx")
        yield Proxied(url, tuple(addresses), access_log)


def test_the_api_goes_round_robin(proxied):
    with httpx.Client(base_url=proxied.url, timeout=60) as client:
        for _ in range(6):
            assert client.get("/health").status_code == 200
        image = encode(photo_rgb())
        for _ in range(2):
            answer = client.post("/analyze", files={"image": ("face.png", image, "image/png")})
            assert answer.status_code == 200, answer.text
            assert answer.json()["faces"]
    health = proxied.upstreams("/health", 6)
    assert len(health) == 6 and set(health) == set(proxied.replicas)
    assert set(proxied.upstreams("/analyze", 2)) == set(proxied.replicas)


def test_the_page_sticks_to_one_replica(proxied):
    with httpx.Client(base_url=proxied.url, timeout=60) as client:
        for _ in range(4):
            page = client.get("/ui/")
            assert page.status_code == 200 and "gradio" in page.text.lower()
            assert client.get("/ui/config").status_code == 200
    served = proxied.upstreams("/ui/", 4) + proxied.upstreams("/ui/config", 4)
    assert len(served) == 8 and len(set(served)) == 1
    assert served[0] in proxied.replicas
