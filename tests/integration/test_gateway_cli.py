"""`tandem gateway serve --config routes.yaml` runs the service; a bad file fails with its errors."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest
import yaml

from tests.support.upstream import ServerThread, Upstream
from vocabulary.net import free_port

pytestmark = pytest.mark.integration


def test_tandem_gateway_serve(tmp_path) -> None:
    up = Upstream("cli")
    with ServerThread(up.app) as server:
        port = free_port()
        path = tmp_path / "routes.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "server": {"port": port},
                    "backends": {"local": {"url": server.url + "/v1"}},
                    "routes": {"chat": {"backends": [{"backend": "local"}]}},
                }
            )
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "tandem.cli", "gateway", "serve", "--config", str(path)]
        )
        try:
            deadline = time.monotonic() + 20
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.poll() is None, "gateway did not start"
                time.sleep(0.1)
            r = httpx.post(
                f"http://127.0.0.1:{port}/v1/chat/completions",
                json={"model": "chat", "messages": [{"role": "user", "content": "hi"}]},
            )
            assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"].startswith(
                "cli:"
            )
        finally:
            proc.terminate()
            proc.wait(10)


def test_serve_says_where_it_listens_with_the_real_port(tmp_path) -> None:
    """`--port 0` asks the system for a port: the one "listening on" line names the real one."""
    up = Upstream("cli")
    with ServerThread(up.app) as server:
        path = tmp_path / "routes.yaml"
        path.write_text(
            yaml.safe_dump(
                {
                    "backends": {"local": {"url": server.url + "/v1"}},
                    "routes": {
                        "chat": {"backends": [{"backend": "local"}]},
                        "spare": {"backends": [{"backend": "local"}]},
                    },
                }
            )
        )
        proc = subprocess.Popen(
            [sys.executable, "-m", "tandem.cli", "gateway", "serve", "--config", str(path)]
            + ["--port", "0"],
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            deadline = time.monotonic() + 30
            line = ""
            while "listening on" not in line:
                assert time.monotonic() < deadline and proc.poll() is None, "no listening line"
                line = proc.stderr.readline()
            url = line.split("listening on ", 1)[1].split()[0]
            assert line.rstrip().endswith("(2 routes)"), line
            port = int(url.rsplit(":", 1)[1])
            assert url == f"http://127.0.0.1:{port}" and port != 0
            assert httpx.get(url + "/readyz").status_code == 200  # already accepting
        finally:
            proc.terminate()
            proc.wait(10)


def test_invalid_config_exits_with_the_field_path(tmp_path) -> None:
    path = tmp_path / "routes.yaml"
    path.write_text("backends: {a: {url: ftp://x}}\nroutes: {chat: {backends: [{backend: b}]}}\n")
    out = subprocess.run(
        [sys.executable, "-m", "tandem.cli", "gateway", "serve", "--config", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "backends.a.url" in out.stderr and "Traceback" not in out.stderr
