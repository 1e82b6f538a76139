"""Loopback helpers for the local runners (local Ray, local Prometheus) and the tests, and the
answer writer of the small standard-library HTTP services (the rollout controller, the drift
service)."""

from __future__ import annotations

import json
import socket
from http.server import BaseHTTPRequestHandler
from typing import Any

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port free on the loopback interface right now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def send_json(
    handler: BaseHTTPRequestHandler, status: int, body: Any, ctype: str = "application/json"
) -> None:
    """Answer `status` with `body`: JSON-encoded, or sent as is when it is bytes (`ctype`)."""
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", ctype)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)
