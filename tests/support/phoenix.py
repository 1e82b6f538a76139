"""A real trace backend for the tracing tier and benchmark: Arize Phoenix from `.venv-phoenix`
(`make phoenix-env`, observability/phoenix-requirements.txt), the version the Tracing component
deploys, with authentication on exactly as in the cluster: the session and admin secrets derived
from one stack secret (components.tracing.derive), the admin secret as the OTLP bearer token.

`phoenix_server(tmp)` yields a `Phoenix` on free loopback ports (its HTTP API and UI, and its
OTLP gRPC receiver) with a SQLite database in `tmp`; `spans(...)` reads spans back through
Phoenix's REST API.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.lifecycle import REPO, _fail, _stop, _wait_http
from vocabulary.net import free_port

PHOENIX_VENV = REPO / ".venv-phoenix"
STACK_SECRET = "tracing-tier-stack-secret"


def _derive(purpose: str) -> str:  # the same derivation as components.tracing.derive
    return hashlib.sha256(f"tandem:{purpose}:{STACK_SECRET}".encode()).hexdigest()


@dataclass
class Phoenix:
    url: str  # HTTP API and UI
    otlp_grpc: str  # http://127.0.0.1:PORT, for an OTLP gRPC exporter
    admin_secret: str
    log: Path

    @property
    def auth(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.admin_secret}"}

    def spans(self, project: str = "default", limit: int = 1000) -> list[dict[str, Any]]:
        r = httpx.get(
            f"{self.url}/v1/projects/{project}/spans",
            params={"limit": limit},
            headers=self.auth,
            timeout=30,
        )
        if r.status_code == 404:  # no span has reached the project yet
            return []
        r.raise_for_status()
        return list(r.json()["data"])

    def wait_spans(self, n: int, timeout_s: float = 60) -> list[dict[str, Any]]:
        """At least `n` spans, waiting for the exporter's batch and Phoenix's insert queue."""
        deadline = time.monotonic() + timeout_s
        while True:
            found = self.spans()
            if len(found) >= n or time.monotonic() > deadline:
                return found
            time.sleep(0.3)


@contextlib.contextmanager
def phoenix_server(tmp: Path) -> Iterator[Phoenix]:
    exe = PHOENIX_VENV / "bin" / "phoenix"
    if not exe.exists():
        _fail(f"{exe} missing: build the trace backend's environment with `make phoenix-env`")
    port, grpc_port = free_port(), free_port()
    work = Path(tmp) / "phoenix"
    work.mkdir(parents=True, exist_ok=True)
    log = work / "phoenix.log"
    admin = _derive("phoenix-admin")
    env = {
        **os.environ,
        "PHOENIX_WORKING_DIR": str(work),
        "PHOENIX_HOST": "127.0.0.1",
        "PHOENIX_PORT": str(port),
        "PHOENIX_GRPC_PORT": str(grpc_port),
        "PHOENIX_ENABLE_AUTH": "true",
        "PHOENIX_SECRET": _derive("phoenix-session"),
        "PHOENIX_ADMIN_SECRET": admin,
        "PHOENIX_TELEMETRY_ENABLED": "false",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(exe), "serve"],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=work,
            env=env,
            start_new_session=True,
        )
    try:
        _wait_http(f"http://127.0.0.1:{port}/healthz", 180, proc, log)
        yield Phoenix(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{grpc_port}", admin, log)
    finally:
        _stop(proc)
